//! CRI behaviour as containerd 1.6 has it, where clients (the kubelet, crictl) rely on
//! it: no log path, the node's hostname, seccomp profile selection (both fields), the
//! image's supplementary groups, host ports on loopback, synchronous log files, image
//! removal under exited containers, a clean `exec -it`, and no pods without a network.
//! Needs root.

use common::node::{busybox, Node, EXITED, RUNNING};
use common::*;
use serde_json::json;
use skiff_fixtures as common;

/// The first line of `cmd` run in a container of pod `pod` with `sc` as its security
/// context (after it exited).
fn run_once(node: &Node, pod: &str, name: &str, script: &str, sc: serde_json::Value) -> String {
    let p = node.pod(pod);
    let mut c = busybox(name, script);
    c["linux"] = json!({"security_context": sc});
    let id = node.container(&p, pod, &c);
    node.wait_state(&id, EXITED);
    node.ok(&["logs", &id])
}

#[test]
#[ignore = "needs root"]
fn a_container_without_log_path_runs_without_a_log_file() {
    let node = Node::start(false);
    node.import_busybox();
    let p = node.pod("nolog");
    let mut c = busybox("quiet", "echo hello; sleep 1000");
    c.as_object_mut().unwrap().remove("log_path");
    let id = node.container(&p, "nolog", &c);
    let st = node.wait_state(&id, RUNNING);
    assert_eq!(st["status"]["log_path"], "", "{st}");
    let logs = node.root.join("logs/nolog");
    let files: Vec<_> = walk(&logs);
    assert!(files.is_empty(), "log files: {files:?}");
    // exec still works: only the file is absent.
    assert_eq!(node.ok(&["exec", &id, "echo", "ok"]), "ok\n");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
#[ignore = "needs root"]
fn a_pod_without_hostname_gets_the_nodes() {
    let node = Node::start(false);
    node.import_busybox();
    // A pod name longer than a hostname may be (64): fine, it is not the hostname.
    let long = "p".repeat(70);
    let cfg = node.file(
        "long-pod.json",
        &json!({"metadata": {"name": long, "namespace": "default", "uid": "u-long"},
                "log_directory": node.root.join("logs/long")}),
    );
    let p = node.ok(&["runp", &cfg]).trim().to_string();
    let c = node.file("hn.json", &busybox("hn", "hostname"));
    let id = node.ok(&["create", &p, &c, &cfg]).trim().to_string();
    node.ok(&["start", &id]);
    node.wait_state(&id, EXITED);
    let mine = nix::unistd::gethostname().unwrap();
    assert_eq!(node.ok(&["logs", &id]).trim(), mine.to_str().unwrap());
}

/// seccomp mode of the container's process: 0 none, 2 filter.
fn seccomp_mode(node: &Node, pod: &str, sc: serde_json::Value) -> String {
    run_once(node, pod, "sc", "grep ^Seccomp: /proc/self/status", sc)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn seccomp_profile_as_named_and_none_by_default() {
    let node = Node::start(false);
    node.import_busybox();
    let profile = node.root.join("profile.json");
    std::fs::write(
        &profile,
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]})
        .to_string(),
    )
    .unwrap();
    let local = path_str(&profile).to_string();
    let cases = [
        ("none", json!({}), "0"),
        (
            "runtime-default",
            json!({"seccomp": {"profile_type": 0}}),
            "2",
        ),
        ("unconfined", json!({"seccomp": {"profile_type": 1}}), "0"),
        (
            "localhost",
            json!({"seccomp": {"profile_type": 2, "localhost_ref": local}}),
            "2",
        ),
        (
            "path-runtime",
            json!({"seccomp_profile_path": "runtime/default"}),
            "2",
        ),
        (
            "path-docker",
            json!({"seccomp_profile_path": "docker/default"}),
            "2",
        ),
        (
            "path-unconfined",
            json!({"seccomp_profile_path": "unconfined"}),
            "0",
        ),
        (
            "path-local",
            json!({"seccomp_profile_path": format!("localhost/{local}")}),
            "2",
        ),
    ];
    for (pod, sc, want) in cases {
        assert_eq!(seccomp_mode(&node, pod, sc.clone()), want, "{pod}: {sc}");
    }
    // The localhost profile is the one applied: mkdir is refused.
    let out = run_once(
        &node,
        "local-mkdir",
        "mk",
        "mkdir /tmp/d 2>&1 || echo refused",
        json!({"seccomp_profile_path": format!("localhost/{local}")}),
    );
    assert!(out.contains("refused"), "{out}");
    let o = node.ctl(&[
        "create",
        &node.pod("bad"),
        &node.file("bad.json", &{
            let mut c = busybox("bad", "true");
            c["linux"] = json!({"security_context": {"seccomp_profile_path": "nonsense"}});
            c
        }),
        &node.pod_config("bad"),
    ]);
    assert!(!o.status.success(), "a bad profile path was accepted");
}

#[test]
#[ignore = "needs root"]
fn image_groups_are_added_and_a_group_needs_a_user() {
    let node = Node::start(false);
    node.import_busybox();
    // The test image lists root in wheel (10) and nobody in users (100).
    let root = run_once(&node, "g-root", "ids", "id -G", json!({}));
    assert_eq!(root.trim(), "0 10");
    let nobody = run_once(
        &node,
        "g-nobody",
        "ids",
        "id -G",
        json!({"run_as_user": {"value": 65534}, "supplemental_groups": [4000]}),
    );
    assert_eq!(nobody.trim(), "65534 100 4000");
    let p = node.pod("g-bad");
    let mut c = busybox("g", "true");
    c["linux"] = json!({"security_context": {"run_as_group": {"value": 5}}});
    let o = node.ctl(&[
        "create",
        &p,
        &node.file("g.json", &c),
        &node.pod_config("g-bad"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("user group \"5\" is specified without user")
            || err.contains("user group 5 is specified without user"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root"]
fn host_ports_answer_on_the_nodes_loopback() {
    let node = Node::start(true);
    node.import_busybox();
    let cfg = node.file(
        "hp-pod.json",
        &json!({"metadata": {"name": "hp", "namespace": "default", "uid": "u-hp"},
                "hostname": "hp", "log_directory": node.root.join("logs/hp"),
                "port_mappings": [{"protocol": 0, "container_port": 80, "host_port": 18080}]}),
    );
    let p = node.ok(&["runp", &cfg]).trim().to_string();
    let c = node.file(
        "hp-c.json",
        &busybox(
            "web",
            "echo from-the-pod > /tmp/index.html; httpd -f -p 80 -h /tmp",
        ),
    );
    let id = node.ok(&["create", &p, &c, &cfg]).trim().to_string();
    node.ok(&["start", &id]);
    node.wait_state(&id, RUNNING);
    let mut last = String::new();
    wait_for(
        || {
            let o = node.in_node("curl -s -m 2 http://127.0.0.1:18080/");
            last = format!("{o:?}");
            String::from_utf8_lossy(&o.stdout).contains("from-the-pod")
        },
        "the host port on 127.0.0.1",
    );
    node.ok(&["rmp", "-f", &p]);
    let o = node.in_node("curl -s -m 1 http://127.0.0.1:18080/");
    assert!(!o.status.success(), "the port outlived its pod: {last}");
}

#[test]
#[ignore = "needs root"]
fn log_files_exist_when_start_and_reopen_return() {
    let node = Node::start(false);
    node.import_busybox();
    let p = node.pod("logs");
    let c = node.file(
        "ticker.json",
        &busybox("ticker", "while true; do echo tick; sleep 0.05; done"),
    );
    let pcfg = node.pod_config("logs");
    let id = node.ok(&["create", &p, &c, &pcfg]).trim().to_string();
    node.ok(&["start", &id]);
    let log = std::path::PathBuf::from(node.inspect(&id)["status"]["log_path"].as_str().unwrap());
    assert!(log.exists(), "no log file when StartContainer returned");
    for round in 0..5 {
        let rotated = log.with_extension(format!("log.{round}"));
        std::fs::rename(&log, &rotated).unwrap();
        node.ok(&["reopen-log", &id]);
        // At once, not eventually.
        assert!(
            log.exists(),
            "round {round}: no new file when ReopenContainerLog returned"
        );
        wait_for(
            || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("tick")),
            "output in the new file",
        );
    }
}

#[test]
#[ignore = "needs root"]
fn an_image_used_only_by_exited_containers_can_be_removed() {
    let node = Node::start(false);
    node.import_busybox();
    let p = node.pod("rmi");
    let done = node.container(&p, "rmi", &busybox("done", "echo finished"));
    node.wait_state(&done, EXITED);
    let live = node.container(&p, "rmi", &busybox("live", "sleep 1000"));
    node.wait_state(&live, RUNNING);
    // A running user still holds it.
    let o = node.ctl(&["rmi", "docker.io/skiff/busybox:latest"]);
    assert!(!o.status.success(), "removed under a running container");
    node.ok(&["rm", "-f", &live]);
    node.ok(&["rmi", "docker.io/skiff/busybox:latest"]);
    assert!(!node.ok(&["images", "-q"]).contains("sha256"));
    // The exited container is still there, its logs too; removing it collects the rest.
    assert_eq!(node.ok(&["logs", &done]), "finished\n");
    node.ok(&["rm", &done]);
    let layers = walk(&node.root.join("images"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("layers"))
        .count();
    assert_eq!(layers, 0, "layers left after the last user went");
}

#[test]
#[ignore = "needs root"]
fn exec_with_a_terminal_prints_only_the_output() {
    let node = Node::start(false);
    node.import_busybox();
    let (_, id) = node.run("tty", &busybox("idle", "sleep 1000"));
    node.wait_state(&id, RUNNING);
    for transport in ["websocket", "spdy"] {
        // skiffctl on a real terminal: a pty whose other end the test reads.
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = std::fs::File::from(pty.slave);
        let status = std::process::Command::new(skiffctl_bin())
            .arg("-r")
            .arg(format!("unix://{}", node.sock().display()))
            .args(["exec", "--transport", transport, "-it", &id, "echo", "abc"])
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .status()
            .unwrap();
        assert!(status.success(), "{transport}");
        let mut out = Vec::new();
        let mut f = std::fs::File::from(pty.master);
        let mut buf = [0u8; 4096];
        loop {
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&f),
                events: libc::POLLIN,
                revents: 0,
            };
            if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
                break;
            }
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "abc\r\n",
            "{transport}: {out:?}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn without_a_network_pods_are_refused_with_the_reason() {
    let mut node = Node::start(false);
    // Take the node's network configuration away and restart the server.
    for e in std::fs::read_dir(node.root.join("cni")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    node.kill9();
    node.spawn();
    node.import_busybox();
    let info = node.json(&["info"]);
    let net = info["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NetworkReady")
        .unwrap()
        .clone();
    assert_eq!(net["status"], false, "{info}");
    assert_eq!(net["reason"], "NetworkPluginNotReady");
    let why = net["message"].as_str().unwrap().to_string();
    assert!(why.contains("no CNI configuration"), "{why}");
    let o = node.ctl(&["runp", &node.pod_config("nonet")]);
    assert!(!o.status.success(), "a pod without a network started");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&why), "{err}");
    assert!(
        node.ok(&["pods", "-q"]).trim().is_empty(),
        "something was left"
    );
    // A host-network pod needs no CNI.
    let cfg = node.file(
        "hostnet.json",
        &json!({"metadata": {"name": "hostnet", "namespace": "default", "uid": "u-hn"},
                "log_directory": node.root.join("logs/hn"),
                "linux": {"security_context": {"namespace_options": {"network": 2}}}}),
    );
    node.ok(&["runp", &cfg]);
}
