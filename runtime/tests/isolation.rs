//! What the container sees: namespaces (new and joined), user namespace mappings,
//! mounts, masked/readonly paths, capabilities, rlimits, seccomp, devices. Needs root.

use common::*;
use serde_json::json;
use skiff_fixtures as common;

fn run_ok(cli: &Cli, b: &Bundle) -> String {
    let (code, out, err) = cli.run_bundle(&unique("iso"), b);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
#[ignore = "needs root"]
fn every_namespace_kind_is_new() {
    require_root();
    let cli = Cli::new();
    let script = "for n in pid net ipc uts mnt cgroup time; do echo $n $(readlink /proc/self/ns/$n); done; echo host $(hostname); echo pid $$; ls /sys/class/net; cat /proc/self/cgroup | head -1";
    let mut b = Bundle::new(&["sh", "-c", script]);
    let has_time = std::path::Path::new("/proc/self/ns/time").exists();
    if has_time {
        b.config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        b.save();
    }
    let out = run_ok(&cli, &b);
    let kinds: &[&str] = if has_time {
        &["pid", "net", "ipc", "uts", "mnt", "cgroup", "time"]
    } else {
        &["pid", "net", "ipc", "uts", "mnt", "cgroup"]
    };
    for kind in kinds {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{kind} ")))
            .unwrap();
        assert!(
            !line.ends_with(&host_ns(kind)),
            "{kind} namespace is the host's: {line}"
        );
    }
    assert!(out.contains("host skiff\n"));
    assert!(out.contains("pid 1\n"));
    assert!(
        out.contains("lo\n") && !out.contains("eth0"),
        "fresh netns has only lo: {out}"
    );
    assert!(
        out.trim_end().ends_with(":/"),
        "cgroup namespace roots at the container cgroup: {out}"
    );
}

#[test]
#[ignore = "needs root"]
fn namespaces_joined_by_path() {
    require_root();
    let cli = Cli::new();
    // A holder container whose uts and net namespaces a second container joins (as pods do).
    let mut holder = Bundle::new(&["sleep", "1000"]);
    holder.config["hostname"] = json!("shared-host");
    holder.save();
    let hid = unique("holder");
    cli.ok(&["run", "-d", "-b", path_str(&holder.dir), &hid]);
    let hpid = cli.state(&hid)["pid"].as_i64().unwrap();
    let mut b = Bundle::new(&["sh", "-c", "hostname; readlink /proc/self/ns/net"]);
    b.config["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
        {"type": "uts", "path": format!("/proc/{hpid}/ns/uts")},
        {"type": "network", "path": format!("/proc/{hpid}/ns/net")}
    ]);
    b.config.as_object_mut().unwrap().remove("hostname");
    b.save();
    let out = run_ok(&cli, &b);
    let holder_net = std::fs::read_link(format!("/proc/{hpid}/ns/net")).unwrap();
    assert_eq!(out, format!("shared-host\n{}\n", holder_net.display()));
    // A bad path fails create with the path in the message.
    b.config["linux"]["namespaces"][3]["path"] = json!("/proc/999999999/ns/uts");
    b.save();
    let (code, _, err) = cli.run_bundle(&unique("badns"), &b);
    assert_ne!(code, 0);
    assert!(err.contains("/proc/999999999/ns/uts"), "{err}");
    cli.ok(&["delete", "-f", &hid]);
}

#[test]
#[ignore = "needs root"]
fn user_namespace_with_mappings() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /data/made-inside; ls -ln /data/made-inside"]);
    let data = b.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(100000), Some(100000)).unwrap();
    // The rootfs must be reachable for the mapped root.
    std::os::unix::fs::chown(b.rootfs(), Some(100000), Some(100000)).unwrap();
    b.config["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "user"}, {"type": "network"}]);
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["root"]["readonly"] = json!(false);
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": path_str(&data), "options": ["rbind", "rw"]}));
    b.save();
    let out = run_ok(&cli, &b);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(lines[2], "0", "root inside");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data.join("made-inside")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100000, 100000),
        "container root is host uid 100000"
    );
}

#[test]
#[ignore = "needs root"]
fn mounts_masked_and_readonly_paths() {
    require_root();
    let cli = Cli::new();
    let host = b"from the host\n";
    let mut b = Bundle::new(&["sh", "-c", "cat /ro/file; echo x > /ro/file 2>/dev/null && echo ro-writable; \
         touch /newfile 2>/dev/null && echo root-writable; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo procsys-writable; \
         echo kcore=$(wc -c < /proc/kcore 2>/dev/null); echo firmware=$(ls /sys/firmware 2>/dev/null | wc -l); \
         touch /tmp/ok && echo tmp-writable; grep ' /tmp ' /proc/mounts | cut -d' ' -f3"]);
    let src = b.dir.join("ro");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), host).unwrap();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/ro", "type": "bind", "source": path_str(&src), "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    b.save();
    let out = run_ok(&cli, &b);
    assert!(out.starts_with("from the host\n"), "{out}");
    assert!(!out.contains("ro-writable"), "ro bind is read-only: {out}");
    assert!(!out.contains("root-writable"), "readonly rootfs: {out}");
    assert!(
        !out.contains("procsys-writable"),
        "/proc/sys read-only: {out}"
    );
    // Masked where the host has them: /proc/kcore reads as /dev/null, /sys/firmware is an empty tmpfs.
    if std::path::Path::new("/proc/kcore").exists() {
        assert!(out.contains("kcore=0\n"), "{out}");
    }
    assert!(out.contains("firmware=0\n"), "{out}");
    assert!(out.contains("tmp-writable\ntmpfs\n"), "{out}");
    assert_eq!(
        std::fs::read(src.join("file")).unwrap(),
        host,
        "host file unchanged"
    );
}

#[test]
#[ignore = "needs root"]
fn capabilities_follow_the_config() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["grep", "^Cap", "/proc/self/status"]);
    let out = run_ok(&cli, &b);
    // Default set: CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP
    // NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    b.config["process"]["capabilities"] = json!({"bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE"]});
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 6]});
    b.config["process"]["args"] = json!([
        "sh",
        "-c",
        "grep -E '^(Cap|Uid|Gid|Groups)' /proc/self/status"
    ]);
    b.save();
    let out = run_ok(&cli, &b);
    assert!(out.contains("Uid:\t1000\t1000\t1000\t1000"), "{out}");
    assert!(out.contains("Groups:\t5 6"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000420"), "{out}");
    // The ambient capability survives the exec of grep as uid 1000.
    assert!(out.contains("CapAmb:\t0000000000000400"), "{out}");
    assert!(
        out.contains("CapPrm:\t0000000000000400"),
        "after execve as non-root only ambient caps remain: {out}"
    );
}

#[test]
#[ignore = "needs root"]
fn rlimits_and_umask() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c; umask"]);
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}, {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]);
    b.config["process"]["user"]["umask"] = json!(0o027);
    b.save();
    assert_eq!(run_ok(&cli, &b), "100\n200\n0\n0027\n");
}

#[test]
#[ignore = "needs root"]
fn seccomp_denies_with_errno() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "grep Seccomp: /proc/self/status; mkdir /tmp/x; echo mkdir=$?; readlink /proc/self/exe >/dev/null; echo readlink=$?"]);
    b.config["root"]["readonly"] = json!(false);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["readlink", "readlinkat"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    b.save();
    let (code, out, err) = cli.run_bundle(&unique("seccomp"), &b);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Seccomp:\t2"), "filter mode: {out}");
    assert!(
        out.contains("mkdir=1") && err.contains("Permission denied"),
        "mkdir fails with EACCES (13): {out} {err}"
    );
    assert!(out.contains("readlink=1"), "{out}");
    // The same filter without no_new_privs is loaded while the caps still allow it.
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.save();
    let (code, out, err) = cli.run_bundle(&unique("seccomp2"), &b);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mkdir=1"), "{out}");
}

#[test]
#[ignore = "needs root"]
fn sysctl_hostname_domainname_env() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward; hostname; cat /proc/sys/kernel/domainname; echo $HOME $GREETING; pwd"]);
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.config["hostname"] = json!("box");
    b.config["domainname"] = json!("example.test");
    b.config["process"]["env"] = json!(["PATH=/bin", "GREETING=hi"]);
    b.config["process"]["cwd"] = json!("/work/dir");
    b.config["root"]["readonly"] = json!(false);
    b.save();
    assert_eq!(
        run_ok(&cli, &b),
        "1\nbox\nexample.test\n/root hi\n/work/dir\n"
    );
}

#[test]
#[ignore = "needs root"]
fn devices_from_config() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "stat -c '%t:%T %a' /dev/fuse-like; head -c 4 /dev/zero | wc -c; head -c 1 /dev/mem 2>&1 | head -c 0; echo mem=$?"]);
    b.config["linux"]["devices"] = json!([{"path": "/dev/fuse-like", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0}]);
    b.save();
    let out = run_ok(&cli, &b);
    assert!(out.starts_with("1:3 600\n4\n"), "{out}");
}

#[test]
#[ignore = "needs root"]
fn no_pivot_oom_score_and_personality() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "cat /proc/self/oom_score_adj; uname -m; ls /"]);
    b.config["process"]["oomScoreAdj"] = json!(500);
    b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
    b.save();
    let o = cli.run(&[
        "run",
        "--no-pivot",
        "-b",
        path_str(&b.dir),
        &unique("nopivot"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "500");
    assert!(
        lines[1] == "i686" || lines[1] == "i386",
        "LINUX32 personality: {out}"
    );
    assert!(
        out.contains("bin\n") && !out.contains("boot\n"),
        "chrooted into the rootfs: {out}"
    );
}

#[test]
#[ignore = "needs root"]
fn negative_oom_score_needs_cap_sys_resource() {
    require_root();
    let has_sys_resource = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    let cli = Cli::new();
    let mut b = Bundle::new(&["cat", "/proc/self/oom_score_adj"]);
    b.config["process"]["oomScoreAdj"] = json!(-998);
    b.save();
    let (code, out, err) = cli.run_bundle(&unique("oomneg"), &b);
    if has_sys_resource {
        assert_eq!((code, out.trim()), (0, "-998"), "{err}");
    } else {
        // This host (and CI) lacks CAP_SYS_RESOURCE: a clear error instead of a silent no-op.
        assert_ne!(code, 0);
        assert!(
            err.contains("oomScoreAdj -998") && err.contains("CAP_SYS_RESOURCE"),
            "{err}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn exec_with_tty_allocates_a_terminal() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique("exectty");
    cli.ok(&["run", "-d", "-b", path_str(&b.dir), &id]);
    // No console socket: the runtime allocates the pty and copies its output to our stdout.
    let out = cli.ok(&["exec", "-t", &id, "sh", "-c", "tty; echo done"]);
    assert!(out.contains("/dev/pts/") && out.contains("done"), "{out:?}");
    cli.ok(&["delete", "-f", &id]);
}
