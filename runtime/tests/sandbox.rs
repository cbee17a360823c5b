//! Pod sandboxes: containers created in one sandbox share its network, IPC and UTS
//! namespaces (one IP, talk over localhost), nest their cgroups under the pod's, and the
//! sandbox is torn down even when parts are already gone. Needs root.

mod common;
use common::*;
use serde_json::json;
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
fn containers_of_a_pod_share_network_and_talk_over_localhost() {
    if !require_root() {
        return;
    }
    let cli = Cli::new();
    std::fs::create_dir_all(&cli.root).unwrap();
    let id = unique("pod");
    let cfg = SandboxConfig {
        hostname: "web-0".into(),
        dns_servers: vec!["10.96.0.10".into()],
        dns_searches: vec!["default.svc.cluster.local".into()],
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
        out.contains("nameserver 10.96.0.10") && out.contains("search default.svc.cluster.local"),
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
fn removal_tolerates_parts_already_gone() {
    if !require_root() {
        return;
    }
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
