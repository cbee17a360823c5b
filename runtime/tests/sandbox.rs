//! Pod sandboxes: containers created in one sandbox share its network, IPC and UTS
//! namespaces (one IP, talk over localhost), nest their cgroups under the pod's, and the
//! sandbox is torn down even when parts are already gone. Needs root.

use common::*;
use serde_json::json;
use skiff_fixtures as common;
use skiff_runtime::sandbox::{self, SandboxConfig};

fn pod_container(b: &mut Bundle, sb: &sandbox::Sandbox, name: &str) {
    let ns = |kind: &str| sb.ns_path(kind).to_string_lossy().into_owned();
    b.config["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "network", "path": ns("net")}, {"type": "ipc", "path": ns("ipc")}, {"type": "uts", "path": ns("uts")}
    ]);
    // The hostname belongs to the sandbox's UTS namespace.
    b.config.as_object_mut().unwrap().remove("hostname");
    b.config["linux"]["cgroupsPath"] = json!(format!("{}/{name}", sb.cgroup));
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    for (dest, src) in [
        ("/etc/hosts", sb.hosts_path()),
        ("/etc/resolv.conf", sb.resolv_path()),
        ("/etc/hostname", sb.hostname_path()),
    ] {
        mounts.push(
            json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "ro"]}),
        );
    }
    b.save();
}

#[test]
#[ignore = "needs root"]
fn containers_of_a_pod_share_network_and_talk_over_localhost() {
    require_root();
    let cli = Cli::new();
    std::fs::create_dir_all(&cli.root).unwrap();
    let id = unique("pod");
    let cfg = SandboxConfig {
        hostname: "web-0".into(),
        dns_servers: vec!["10.96.0.10".into()],
        dns_searches: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ],
        ..Default::default()
    };
    let mut sb = sandbox::create(&cli.root, &id, &cfg).unwrap();
    assert!(
        sandbox::create(&cli.root, &id, &cfg).is_err(),
        "ids are unique"
    );
    sb.set_ip("10.88.0.9").unwrap();

    let mut server = Bundle::new(&["sh", "-c", "echo hello-from-server | nc -l -p 8080"]);
    pod_container(&mut server, &sb, "server");
    let sid = unique("server");
    cli.ok(&["run", "-d", "-b", path_str(&server.dir), &sid]);

    let mut client = Bundle::new(&["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 8080 && break; sleep 0.2; done; hostname; cat /etc/resolv.conf; grep web-0 /etc/hosts; readlink /proc/self/ns/net"]);
    pod_container(&mut client, &sb, "client");
    let (code, out, err) = cli.run_bundle(&unique("client"), &client);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("hello-from-server\nweb-0\n"), "{out}");
    assert!(
        out.contains("nameserver 10.96.0.10")
            && out.contains("search default.svc.cluster.local svc.cluster.local\n"),
        "{out}"
    );
    assert!(out.contains("10.88.0.9\tweb-0"), "{out}");
    // Same network namespace as the pinned one.
    let pinned = std::fs::metadata(sb.ns_path("net")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        out.trim_end().ends_with(&format!("net:[{}]", pinned.ino())),
        "{out}"
    );

    // Container cgroups nest under the pod cgroup (the server's stays until it is deleted).
    let nested = match skiff_runtime::cgroups::detect() {
        skiff_runtime::cgroups::Version::V2 => format!("/sys/fs/cgroup{}/server", sb.cgroup),
        skiff_runtime::cgroups::Version::V1 => format!("/sys/fs/cgroup/pids{}/server", sb.cgroup),
    };
    assert!(std::path::Path::new(&nested).is_dir(), "{nested}");

    cli.ok(&["delete", "-f", &sid]);
    sandbox::remove(&cli.root, &id).unwrap();
    assert!(!sb.dir.exists());
    assert!(
        !std::path::Path::new(&nested).parent().unwrap().exists(),
        "pod cgroup removed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&sb.dir.to_string_lossy().to_string()),
        "namespace pins unmounted"
    );
    assert!(
        sandbox::remove(&cli.root, &id).is_ok(),
        "removing twice is fine"
    );
    assert!(sandbox::load(&cli.root, &id).is_err());
}

#[test]
#[ignore = "needs root"]
fn removal_tolerates_parts_already_gone() {
    require_root();
    let cli = Cli::new();
    std::fs::create_dir_all(&cli.root).unwrap();
    let id = unique("pod");
    let sb = sandbox::create(&cli.root, &id, &SandboxConfig::default()).unwrap();
    // Someone already unpinned the network namespace and removed the pod cgroup.
    nix::mount::umount2(&sb.ns_path("net"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    let _ = skiff_runtime::cgroups::Manager::open(&sb.cgroup)
        .unwrap()
        .destroy();
    sandbox::remove(&cli.root, &id).unwrap();
    assert!(!sb.dir.exists());
}

/// skiff-cni from the workspace build (`cargo build --workspace --bins`).
fn skiff_cni() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-cni");
    p.exists().then_some(p)
}

#[test]
#[ignore = "needs root"]
fn two_pods_reach_each_other_by_ip() {
    require_root();
    let Some(plugin) = skiff_cni() else {
        panic!("target/debug/skiff-cni is missing: run `cargo build --workspace --bins` first (scripts/test-all.sh does)");
    };
    // The "node" is a network namespace this test creates: the bridge and masquerade
    // rules live there, never in the host's namespace.
    let node = format!("sknode{}", std::process::id());
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &node])
        .status()
        .unwrap()
        .success());
    struct DropNetns(String);
    impl Drop for DropNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _guard = DropNetns(node.clone());
    let cli = Cli::new();
    std::fs::create_dir_all(&cli.root).unwrap();
    let data = cli.root.join("cni-data");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "podnet", "type": "skiff-cni", "bridge": format!("skp{}", std::process::id() % 100000),
        "ipam": {"type": "host-local", "subnet": "10.126.0.0/24", "dataDir": data}
    });
    let (root, node_ns) = (cli.root.clone(), node.clone());
    // Plugin calls inherit the calling thread's network namespace: do them from a thread in the node.
    let in_node = move |f: Box<dyn FnOnce() + Send>| {
        let ns = std::fs::File::open(format!("/run/netns/{node_ns}")).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(
                std::os::fd::AsFd::as_fd(&ns),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    };
    let (a, b) = (unique("poda"), unique("podb"));
    {
        let (root, plugin, conf, a, b) = (
            root.clone(),
            plugin.clone(),
            conf.clone(),
            a.clone(),
            b.clone(),
        );
        in_node(Box::new(move || {
            for id in [&a, &b] {
                sandbox::create(&root, id, &SandboxConfig::default()).unwrap();
                let r = sandbox::network_add(&root, id, &plugin, &conf, "eth0").unwrap();
                assert!(
                    r["ips"][0]["address"]
                        .as_str()
                        .unwrap()
                        .starts_with("10.126.0."),
                    "{r}"
                );
            }
        }));
    }
    let sa = sandbox::load(&root, &a).unwrap();
    let sb = sandbox::load(&root, &b).unwrap();
    let (ipa, ipb) = (sa.ip.clone().unwrap(), sb.ip.clone().unwrap());
    assert_ne!(ipa, ipb);
    let mut ping = Bundle::new(&["sh", "-c", &format!("ping -c 1 -W 3 {ipb} >/dev/null && echo reached; ip -4 addr show eth0 | grep -o 'inet [0-9.]*'")]);
    // ping needs a raw socket: CAP_NET_RAW is in the default set.
    let bin = ping.rootfs().join("bin");
    for applet in ["ping", "ip"] {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    pod_container(&mut ping, &sa, "pinger");
    let (code, out, err) = cli.run_bundle(&unique("pinger"), &ping);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("reached\ninet {ipa}\n"));
    {
        let (root, a, b) = (root.clone(), a.clone(), b.clone());
        in_node(Box::new(move || {
            sandbox::remove(&root, &a).unwrap();
            sandbox::remove(&root, &b).unwrap();
        }));
    }
    // CNI DEL ran: both addresses are back in the pool.
    let left: Vec<_> = std::fs::read_dir(data.join("podnet"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
