//! The CRI server end to end, driven through skiffctl as a user would: images, pods,
//! containers, CRI logs, exec, stop/remove, filters, networking through skiff-cni in a
//! node network namespace the test creates, pulls from a loopback registry, and a
//! kill -9 of the server. Needs root.

use common::node::{busybox, Node, CREATED, EXITED, RUNNING};
use common::registry::{build_image, Registry};
use common::*;
use serde_json::{json, Value};
use skiff_fixtures as common;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
#[ignore = "needs root"]
fn pods_containers_logs_exec_through_skiffctl() {
    require_root();
    let node = Node::start(false);
    node.import_busybox();
    let images = node.ok(&["images"]);
    assert!(images.contains("docker.io/skiff/busybox"), "{images}");
    let v = node.ok(&["version"]);
    assert!(
        v.contains("RuntimeName:  skiff") && v.contains("RuntimeApiVersion:  v1"),
        "{v}"
    );

    let (pod, web) = node.run(
        "web",
        &busybox(
            "main",
            "echo hello; echo oops >&2; hostname; trap 'exit 0' TERM; sleep 1000 & wait",
        ),
    );
    node.wait_state(&web, RUNNING);
    // The status names the image by its full name, as containerd's (the kubelet reports
    // it as the pod's containerStatuses[].image), whether it was asked for by a short
    // name or by ID.
    let id = node.json(&["inspecti", "docker.io/skiff/busybox:latest"])["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for asked in ["skiff/busybox", id.as_str()] {
        let mut c = busybox(&format!("by-{}", &asked[..5]), "sleep 1000");
        c["image"]["image"] = json!(asked);
        let (pod, cid) = node.run(&format!("img-{}", &asked[..5]), &c);
        let st = node.inspect(&cid);
        assert_eq!(
            st["status"]["image"]["image"], "docker.io/skiff/busybox:latest",
            "asked for {asked}: {st}"
        );
        assert!(
            st["status"]["image_ref"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{st}"
        );
        node.ok(&["rmp", "-f", &pod]);
    }
    // The CRI log file: timestamped records per line and stream.
    let log_path = node.inspect(&web)["status"]["log_path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(log_path.ends_with("logs/web/main/0.log"), "{log_path}");
    wait_for(
        || std::fs::read_to_string(&log_path).is_ok_and(|t| t.lines().count() >= 3),
        "log lines",
    );
    let text = std::fs::read_to_string(&log_path).unwrap();
    let recs: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let r =
                skiff_runtime::cri::logs::parse(l).unwrap_or_else(|| panic!("bad record {l:?}"));
            assert!(humantime::parse_rfc3339(r.time).is_ok(), "{l}");
            (r.stream.to_string(), r.content.to_string())
        })
        .collect();
    assert!(recs.contains(&("stdout".into(), "hello".into())), "{text}");
    assert!(recs.contains(&("stderr".into(), "oops".into())), "{text}");
    assert!(
        recs.contains(&("stdout".into(), "web".into())),
        "hostname is the pod's: {text}"
    );
    // --tail 1: the last record (stdout and stderr are two pipes: their lines may
    // interleave either way).
    // Each record comes back on its own stream, as with crictl.
    let (stream, last) = recs.last().unwrap();
    let o = node.ctl(&["logs", "--tail", "1", &web]);
    let (on, off) = match stream.as_str() {
        "stderr" => (&o.stderr, &o.stdout),
        _ => (&o.stdout, &o.stderr),
    };
    assert_eq!(String::from_utf8_lossy(on), format!("{last}\n"), "{o:?}");
    assert!(off.is_empty(), "{o:?}");
    let o = node.ctl(&["logs", &web]);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n", "{o:?}");

    // Exec: output, exit code, and a timeout that kills the command.
    let o = node.ctl(&[
        "exec",
        &web,
        "sh",
        "-c",
        "echo in-$(hostname); cat /proc/1/cmdline | tr '\\0' ' '; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("in-web\nsh -c echo hello"),
        "own PID namespace: {out}"
    );
    let o = node.ctl(&["exec", "--timeout", "1", &web, "sleep", "30"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("timed out"),
        "{o:?}"
    );

    // Containers that finish: exit codes and reasons.
    let failing = node.container(&pod, "web", &busybox("fails", "echo bye; exit 7"));
    let st = node.wait_state(&failing, EXITED);
    assert_eq!(st["status"]["exit_code"], 7);
    assert_eq!(st["status"]["reason"], "Error");
    assert!(st["status"]["finished_at"].as_i64() >= st["status"]["started_at"].as_i64());
    // `skiffctl events` streams what happens to containers, exits included.
    let events_out = node.root.join("events.json");
    let mut events = Command::new(env!("CARGO_BIN_EXE_skiffctl"))
        .arg("-r")
        .arg(format!("unix://{}", node.sock().display()))
        .arg("events")
        .stdout(std::fs::File::create(&events_out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let done = node.container(&pod, "web", &busybox("done", "true"));
    wait_for(
        || {
            let text = std::fs::read_to_string(&events_out).unwrap_or_default();
            ["CREATED", "STARTED", "STOPPED"].iter().all(|k| {
                text.contains(&format!(
                    "\"container_event_type\": \"CONTAINER_{k}_EVENT\""
                ))
            }) && text.contains(&done)
        },
        "created, started and stopped events from skiffctl events",
    );
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(
        node.wait_state(&done, EXITED)["status"]["reason"],
        "Completed"
    );

    // A created container that was never started.
    let idle_cfg = node.file("idle.json", &busybox("idle", "sleep 100"));
    let pcfg = node.pod_config("web");
    let idle = node
        .ok(&["create", &pod, &idle_cfg, &pcfg])
        .trim()
        .to_string();
    assert_eq!(node.inspect(&idle)["status"]["state"], CREATED);
    let dup = node.ctl(&["create", &pod, &idle_cfg, &pcfg]);
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("reserved"),
        "{dup:?}"
    );

    // Filters: state, label, pod.
    let running = node.ok(&["ps", "-q"]);
    assert_eq!(running.trim(), web);
    let all = node.ok(&["ps", "-a", "-q"]);
    assert_eq!(all.lines().count(), 4, "{all}");
    assert_eq!(
        node.ok(&["ps", "-a", "-q", "--label", "container=fails"])
            .trim(),
        failing
    );
    assert_eq!(
        node.ok(&["ps", "-a", "-q", "--state", "exited"])
            .lines()
            .count(),
        2
    );
    assert_eq!(node.ok(&["pods", "-q", "--label", "app=web"]).trim(), pod);
    assert!(node.ok(&["pods", "-q", "--label", "app=nope"]).is_empty());

    // Stop: SIGTERM first (the trap exits 0), SIGKILL after the timeout otherwise.
    node.ok(&["stop", "-t", "5", &web]);
    let st = node.inspect(&web);
    assert_eq!(st["status"]["state"], EXITED);
    assert_eq!(st["status"]["exit_code"], 0, "{st}");
    let stubborn = node.container(
        &pod,
        "web",
        &busybox("stubborn", "trap '' TERM; sleep 1000 & wait; sleep 1000"),
    );
    node.wait_state(&stubborn, RUNNING);
    node.ok(&["stop", "-t", "1", &stubborn]);
    assert_eq!(node.inspect(&stubborn)["status"]["exit_code"], 137);

    // Removal: containers, then the pod with its cgroup.
    let sandbox_cgroup = node.json(&["inspectp", &pod])["info"]["cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    node.ok(&["rm", &failing]);
    assert!(node.ctl(&["inspect", &failing]).status.code() != Some(0));
    let still = node.ctl(&["rmp", &pod]);
    assert!(!still.status.success(), "a ready pod needs -f");
    node.ok(&["stopp", &pod]);
    let st = node.json(&["inspectp", &pod]);
    assert_eq!(st["status"]["state"], 1, "NOTREADY after stopp: {st}");
    node.ok(&["rmp", &pod]);
    assert!(node.ok(&["ps", "-a", "-q"]).is_empty());
    assert!(node.ok(&["pods", "-q"]).is_empty());
    let leftover = ["pids", "memory", ""]
        .iter()
        .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}{sandbox_cgroup}").replace("//", "/")))
        .find(|p| p.exists());
    assert!(leftover.is_none(), "{leftover:?}");
    assert!(std::fs::read_dir(node.root.join("state/cri/containers"))
        .unwrap()
        .next()
        .is_none());

    // Images: in use no more, so it can go.
    node.ok(&["rmi", "docker.io/skiff/busybox:latest"]);
    assert!(!node.ok(&["images", "-q"]).contains("sha256"));
}

#[test]
#[ignore = "needs root"]
fn server_kill9_keeps_pods_containers_and_exits() {
    require_root();
    let mut node = Node::start(false);
    node.import_busybox();
    let (pod, long) = node.run("db", &busybox("long", "echo up; sleep 1000"));
    let short_cfg = node.file("short.json", &busybox("short", "sleep 1; exit 5"));
    let pcfg = node.pod_config("db");
    let short = node
        .ok(&["create", &pod, &short_cfg, &pcfg])
        .trim()
        .to_string();
    node.ok(&["start", &short]);
    let pid = node.inspect(&long)["info"]["pid"].as_i64().unwrap();

    // kill -9 with no restart for a while: the short container exits meanwhile.
    node.kill9();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    node.spawn();

    assert_eq!(node.ok(&["pods", "-q"]).trim(), pod);
    let st = node.inspect(&long);
    assert_eq!(st["status"]["state"], RUNNING, "{st}");
    assert_eq!(st["info"]["pid"].as_i64().unwrap(), pid, "the same process");
    let st = node.inspect(&short);
    assert_eq!(st["status"]["state"], EXITED);
    assert_eq!(
        st["status"]["exit_code"], 5,
        "exit recorded by the monitor: {st}"
    );
    // The restarted server can still add to the pod and drive the old container.
    let o = node.ctl(&["exec", &long, "cat", "/proc/1/cmdline"]);
    assert!(o.status.success(), "{o:?}");
    let more = node.container(&pod, "db", &busybox("more", "echo again; sleep 1000"));
    node.wait_state(&more, RUNNING);
    node.ok(&["stop", &long]);
    assert_eq!(node.inspect(&long)["status"]["exit_code"], 137);
    assert_eq!(node.ok(&["logs", &long]), "up\n");
    node.ok(&["rmp", "-f", &pod]);
    assert!(node.ok(&["ps", "-a", "-q"]).is_empty());
}

#[test]
#[ignore = "needs root"]
fn pods_get_addresses_and_serve_http() {
    require_root();
    let node = Node::start(true);
    node.import_busybox();
    let info = node.json(&["info"]);
    let conds = info["status"]["conditions"].as_array().unwrap();
    assert!(conds.iter().all(|c| c["status"] == true), "{info}");

    let page = "echo hello-from-$(hostname) > /tmp/index.html; httpd -f -p 80 -h /tmp";
    let (web, _) = node.run("web", &busybox("httpd", page));
    let (client, _) = node.run("client", &busybox("idle", "sleep 1000"));
    let ip = |p: &str| {
        node.json(&["inspectp", p])["status"]["network"]["ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (web_ip, client_ip) = (ip(&web), ip(&client));
    assert!(
        web_ip.starts_with("10.127.") && client_ip.starts_with("10.127."),
        "{web_ip} {client_ip}"
    );
    assert_ne!(web_ip, client_ip);

    // From the node (its network namespace) to the pod IP.
    let mut body = String::new();
    wait_for(
        || {
            let o = node.in_node(&format!("curl -s -m 2 http://{web_ip}/"));
            body = String::from_utf8_lossy(&o.stdout).to_string();
            body.contains("hello-from-web")
        },
        "HTTP from the node",
    );
    // Pod to pod by IP, and a second container of the web pod over localhost.
    let idle = node.ok(&["ps", "-q", "--name", "idle"]).trim().to_string();
    let o = node.ctl(&[
        "exec",
        &idle,
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{web_ip}/"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello-from-web\n",
        "{o:?}"
    );
    let side = node.container(&web, "web", &busybox("side", "sleep 1000"));
    node.wait_state(&side, RUNNING);
    let o = node.ctl(&["exec", &side, "wget", "-q", "-O", "-", "http://127.0.0.1/"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello-from-web\n",
        "{o:?}"
    );

    // nginx from Debian's package, answering at its pod IP; its access log is the CRI log.
    let tar = node.root.join("nginx.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/images/nginx-oci.sh");
    let built = Command::new(&script).arg(&tar).output().unwrap();
    if !built.status.success() {
        panic!("nginx image: {}", String::from_utf8_lossy(&built.stderr));
    }
    let images = node.root.join("images").display().to_string();
    node.ok(&["import", tar.to_str().unwrap(), "--image-dir", &images]);
    let c = json!({"metadata": {"name": "nginx"}, "image": {"image": "docker.io/skiff/nginx:latest"}, "log_path": "nginx/0.log"});
    // With a host port: 8080 on the node's addresses reaches the pod's port 80.
    let mut pcfg: Value =
        serde_json::from_str(&std::fs::read_to_string(node.pod_config("nginx")).unwrap()).unwrap();
    pcfg["port_mappings"] = json!([{"container_port": 80, "host_port": 8080}]);
    let pfile = node.file("pod-nginx.json", &pcfg);
    let ngx = node.ok(&["runp", &pfile]).trim().to_string();
    let cfile = node.file("c-nginx.json", &c);
    let ngx_c = node
        .ok(&["create", &ngx, &cfile, &pfile])
        .trim()
        .to_string();
    node.ok(&["start", &ngx_c]);
    let ngx_ip = ip(&ngx);
    wait_for(
        || {
            let o = node.in_node(&format!("curl -s -m 2 http://{ngx_ip}/"));
            String::from_utf8_lossy(&o.stdout).contains("Welcome to nginx on Skiff")
        },
        "nginx answers at its pod IP",
    );
    wait_for(
        || {
            node.ok(&["logs", &ngx_c])
                .contains("\"GET / HTTP/1.1\" 200")
        },
        "nginx access log in the CRI log",
    );
    let gw = format!("{}.1", ngx_ip.rsplit_once('.').unwrap().0);
    let o = node.in_node(&format!("curl -s -m 2 http://{gw}:8080/"));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Welcome to nginx on Skiff"),
        "host port: {o:?}\n{}",
        String::from_utf8_lossy(
            &node
                .in_node("nft list table ip skiff-cni; ip -4 addr")
                .stdout
        )
    );
    node.ok(&["stopp", &ngx]);
    let o = node.in_node(&format!("curl -s -m 1 http://{gw}:8080/"));
    assert!(
        !o.status.success(),
        "the host port went with the pod's network"
    );

    // Stopping a pod releases its address (CNI DEL).
    node.ok(&["stopp", &web]);
    let st = node.json(&["inspectp", &web]);
    assert_eq!(st["status"]["network"]["ip"], "", "{st}");
    let o = node.in_node(&format!("curl -s -m 1 http://{web_ip}/"));
    assert!(!o.status.success());
}

#[test]
#[ignore = "needs root, docker-registry and skopeo"]
fn pull_through_cri_from_loopback_registry() {
    require_root();
    let reg = Registry::start()
        .expect("needs docker-registry and skopeo (apt-get install docker-registry skopeo)");
    let tar = reg.dir.join("bb.tar");
    build_image(&tar, true);
    reg.push(&tar, "team/busybox:1.0", &[]);
    let node = Node::start(false);
    let name = format!("127.0.0.1:{}/team/busybox:1.0", reg.port);
    let out = node.ok(&["pull", &name]);
    assert!(
        out.contains(&format!("127.0.0.1:{}/team/busybox@sha256:", reg.port)),
        "{out}"
    );
    // Straight into a store, with a progress display (one line per blob without a tty).
    let local = node.root.join("local-images").display().to_string();
    let out = node.ok(&["pull", "--image-dir", &local, &name]);
    assert!(
        out.contains("sha256:")
            && out.contains(": done ")
            && out.contains(&format!("pulled {name}")),
        "{out}"
    );
    let img = node.json(&["inspecti", &name]);
    assert_eq!(img["status"]["repo_tags"][0], name);
    let missing = node.ctl(&["pull", &format!("127.0.0.1:{}/team/busybox:nope", reg.port)]);
    assert!(!missing.status.success());
    let mut c = busybox("pulled", "echo from-registry");
    c["image"]["image"] = json!(name);
    let (_, id) = node.run("p", &c);
    node.wait_state(&id, EXITED);
    assert_eq!(node.ok(&["logs", &id]), "from-registry\n");
    // Used only by an exited container: it can go (as in containerd), the container stays.
    node.ok(&["rmi", &name]);
    assert!(node.ok(&["images", "-q"]).trim().is_empty());
    assert_eq!(node.ok(&["logs", &id]), "from-registry\n");
    node.ok(&["rm", &id]);
}

#[test]
#[ignore = "needs root"]
fn containers_of_a_pod_share_its_pid_namespace_by_default() {
    require_root();
    let node = Node::start(false);
    node.import_busybox();
    // A pod config without namespace options: PID mode POD, the CRI's zero value.
    let pcfg = node.file(
        "shared.json",
        &json!({"metadata": {"name": "shared", "namespace": "default", "uid": "u-shared"}, "log_directory": node.root.join("logs")}),
    );
    let pod = node.ok(&["runp", &pcfg]).trim().to_string();
    let mut ids = Vec::new();
    for (name, script) in [("a", "sleep 1001"), ("b", "sleep 1002")] {
        let mut c = busybox(name, script);
        c["linux"] = json!({"security_context": {"namespace_options": {"pid": 0}}});
        let f = node.file(&format!("{name}.json"), &c);
        let id = node.ok(&["create", &pod, &f, &pcfg]).trim().to_string();
        node.ok(&["start", &id]);
        ids.push(id);
    }
    let o = node.ok(&["exec", &ids[1], "ps", "-o", "pid,args"]);
    assert!(o.contains("sleep 1001") && o.contains("sleep 1002"), "{o}");
    // pid 1 is the pod's holder, not either container.
    let first = o.lines().nth(1).unwrap_or("");
    assert!(
        first.trim_start().starts_with("1 ") && !first.contains("sleep"),
        "{o}"
    );
    node.ok(&["rmp", "-f", &pod]);
    let holders = Command::new("pgrep")
        .args(["-f", "pod-pause"])
        .output()
        .unwrap();
    let root = node.root.display().to_string();
    let mine = String::from_utf8_lossy(&holders.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&pod))
        })
        .count();
    assert_eq!(mine, 0, "the holder is gone with the pod ({root})");
}

#[test]
#[ignore = "needs root"]
fn exec_attach_and_port_forward_stream_over_websocket_and_spdy() {
    require_root();
    let node = Node::start(false);
    node.import_busybox();
    for transport in ["websocket", "spdy"] {
        streams(&node, transport);
    }
}

/// exec -i/-t, attach -i and port-forward through one transport, on a new pod.
fn streams(node: &Node, transport: &str) {
    let mut echo = busybox(
        "echo",
        "echo started; while read l; do echo got:$l; done; echo eof",
    );
    echo["stdin"] = json!(true);
    let pod_name = format!("s-{transport}");
    let (pod, id) = node.run(&pod_name, &echo);
    node.wait_state(&id, RUNNING);
    // Every streaming command gets --transport after its name.
    let ctl = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skiffctl"));
        c.arg("-r").arg(format!("unix://{}", node.sock().display()));
        c
    };
    let ctl_t = |args: &[&str]| {
        let mut c = ctl();
        c.arg(args[0])
            .args(["--transport", transport])
            .args(&args[1..]);
        c
    };
    let with_input = |args: &[&str], input: &[u8]| output_with_input(ctl_t(args), input);
    // exec -i: stdin goes in, stdout and stderr come back apart, the exit code too.
    let o = with_input(
        &[
            "exec",
            "-i",
            &id,
            "sh",
            "-c",
            "cat; echo to-err >&2; exit 4",
        ],
        b"one\ntwo\n",
    );
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "one\ntwo\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "to-err\n");
    // Bulk both ways: 4 MiB in, counted, and sent back whole.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let o = with_input(&["exec", "-i", &id, "sh", "-c", "cat"], &big);
    assert!(o.status.success(), "{:?}", o.status);
    assert!(
        o.stdout == big,
        "{} of {} bytes came back intact",
        o.stdout.len(),
        big.len()
    );
    // exec -t: a terminal inside.
    let o = with_input(
        &[
            "exec",
            "-t",
            &id,
            "sh",
            "-c",
            "tty; test -t 0 && echo is-a-tty",
        ],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout).replace('\r', "");
    assert!(
        out.starts_with("/dev/pts/") && out.contains("is-a-tty"),
        "{out:?}"
    );
    // attach -i: our input reaches the container's stdin; closing it ends the loop.
    let o = with_input(&["attach", "-i", &id], b"x\ny\n");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got:x\ngot:y\neof\n");
    assert_eq!(node.wait_state(&id, EXITED)["status"]["exit_code"], 0);
    assert_eq!(node.ok(&["logs", &id]), "started\ngot:x\ngot:y\neof\n");
    // A stopped container cannot be exec'd into.
    let o = node.ctl(&["exec", "-i", &id, "true"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not running"),
        "{o:?}"
    );

    // port-forward: a local port reaches port 80 inside the pod's own network namespace.
    let web = node.container(
        &pod,
        &pod_name,
        &busybox("web", "echo pf-ok > /tmp/i.html; httpd -f -p 80 -h /tmp"),
    );
    node.wait_state(&web, RUNNING);
    let (mut pf, port) = forwarding_port(ctl_t(&["port-forward", &pod, "0:80"]));
    for _ in 0..2 {
        let r = http_get(port, "/i.html");
        assert!(r.starts_with("HTTP/1.") && r.ends_with("pf-ok\n"), "{r:?}");
    }
    let _ = pf.kill();
    let _ = pf.wait();
}

#[test]
#[ignore = "needs root"]
fn stats_update_follow_and_log_rotation() {
    require_root();
    let node = Node::start(false);
    node.import_busybox();
    let (pod, ticker) = node.run(
        "t",
        &busybox(
            "ticker",
            "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
        ),
    );
    node.wait_state(&ticker, RUNNING);
    // Stats from the container's cgroup.
    let stats = node.json(&["stats", "-o", "json", &ticker]);
    let s = &stats["stats"][0];
    assert_eq!(s["attributes"]["id"], ticker.as_str());
    assert!(
        s["memory"]["working_set_bytes"]["value"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(
        s["cpu"]["usage_core_nano_seconds"]["value"]
            .as_u64()
            .is_some(),
        "{s}"
    );
    // YAML output parses to the same status.
    let y: Value = serde_yaml::from_str(&node.ok(&["inspect", "-o", "yaml", &ticker])).unwrap();
    assert_eq!(y["status"]["id"], ticker.as_str());

    // Update: the new memory limit reaches the cgroup and the status.
    node.ok(&["update", "--memory", "64m", &ticker]);
    let st = node.inspect(&ticker);
    assert_eq!(
        st["status"]["resources"]["linux"]["memory_limit_in_bytes"],
        64 << 20
    );
    let cg = st["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string();
    let limit = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .find_map(|base| {
            std::fs::read_to_string(format!("{base}{cg}/memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(format!("{base}{cg}/memory.max")))
                .ok()
        })
        .unwrap_or_else(|| panic!("no memory cgroup for {cg}"));
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // Rotation: the file is renamed, ReopenContainerLog starts a new one.
    let log = PathBuf::from(st["status"]["log_path"].as_str().unwrap());
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    node.ok(&["reopen-log", &ticker]);
    wait_for(
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("tick-")),
        "output in the new log file",
    );
    let old = std::fs::read_to_string(&rotated).unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().len(),
        old,
        "old file no longer written"
    );

    // logs -f follows until the container exits.
    let counter = node.container(
        &pod,
        "t",
        &busybox("counter", "for i in 1 2 3; do echo n$i; sleep 0.3; done"),
    );
    let o = node.ctl(&["logs", "-f", &counter]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "n1\nn2\nn3\n");
    // A stopped container's log cannot be reopened.
    node.ok(&["stop", &ticker]);
    assert!(!node.ctl(&["reopen-log", &ticker]).status.success());
}
