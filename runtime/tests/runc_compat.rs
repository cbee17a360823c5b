//! Behaviour users rely on in runc, checked side by side with runc (Debian's 1.1) on the
//! same bundle: `runc spec` bundles, inherited namespaces, deprecated kernel memory
//! limits, "all capabilities", exec's --env and --ignore-paused, startContainer hooks'
//! environment. Needs root and runc.

use common::*;
use serde_json::json;
use skiff_fixtures as common;
use std::process::{Command, Output, Stdio};

/// runc with a private state root, run on the same bundles: the same CLI wrapper as
/// skiff's (runc takes the same --root and commands).
fn runc() -> Cli {
    Cli::with_binary("runc".into())
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run the bundle with both runtimes: (skiff's output, runc's output).
fn both(b: &Bundle) -> (Output, Output) {
    let cli = Cli::new();
    let skiff = cli.run(&["run", "--bundle", path_str(&b.dir), &unique("skiff")]);
    let runc = runc().run(&["run", "--bundle", path_str(&b.dir), &unique("runc")]);
    (skiff, runc)
}

/// A busybox bundle whose config.json is what `runc spec` writes.
fn runc_spec_bundle() -> Bundle {
    let mut b = Bundle::new(&["true"]);
    std::fs::remove_file(b.dir.join("config.json")).unwrap();
    let o = Command::new("runc")
        .args(["spec", "--bundle", path_str(&b.dir)])
        .output()
        .unwrap();
    assert!(o.status.success(), "runc spec: {o:?}");
    b.config = serde_json::from_slice(&std::fs::read(b.dir.join("config.json")).unwrap()).unwrap();
    b
}

fn caps_of(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("Cap")).collect()
}

#[test]
#[ignore = "needs root and runc"]
fn runc_spec_bundle_runs_unchanged() {
    // Exactly as written (terminal: true, `sh`): runc needs a tty for that, skiff makes a
    // pty of its own; the shell's commands come on stdin.
    let b = runc_spec_bundle();
    let cli = Cli::new();
    let o = output_with_input(
        {
            let mut c = cli.cmd();
            c.args(["run", "--bundle", path_str(&b.dir), &unique("runc-spec")]);
            c
        },
        "grep CapAmb /proc/self/status; exit 7\n",
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(7), "{out}\n{err}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    // Its ambient capabilities are not inheritable: skipped with a warning, as runc does.
    assert!(
        err.contains("ambient capabilities") && err.contains("CAP_KILL"),
        "{err}"
    );

    // Without a terminal the two runtimes can be compared line by line.
    let mut b = runc_spec_bundle();
    b.config["process"]["terminal"] = json!(false);
    b.config["process"]["args"] = json!(["grep", "Cap", "/proc/self/status"]);
    b.save();
    let (skiff, runc) = both(&b);
    let ((s_out, s_err), (r_out, r_err)) = (text(&skiff), text(&runc));
    assert!(skiff.status.success(), "{s_err}");
    assert!(runc.status.success(), "{r_err}");
    assert_eq!(caps_of(&s_out), caps_of(&r_out));
}

fn ns_of(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn mounts_below(p: &std::path::Path) -> usize {
    let root = std::fs::canonicalize(p).unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| std::path::Path::new(m).starts_with(&root))
        })
        .count()
}

#[test]
#[ignore = "needs root and runc"]
fn namespaces_not_listed_are_inherited() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "for n in mnt net uts ipc pid; do echo $n $(readlink /proc/self/ns/$n); done; ls /",
    ]);
    b.config["linux"]["namespaces"] = json!([{"type": "pid"}]);
    b.config["hostname"] = json!("");
    b.save();
    // The default masked and read-only paths need a mount namespace: both refuse so.
    let (skiff, runc) = both(&b);
    let refusal = "unable to restrict sys entries without a private MNT namespace";
    assert!(
        !skiff.status.success() && text(&skiff).1.contains(refusal),
        "{skiff:?}"
    );
    assert!(
        !runc.status.success() && text(&runc).1.contains(refusal),
        "{runc:?}"
    );

    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    b.config["root"]["readonly"] = json!(false);
    b.save();
    let cli = Cli::new();
    let (code, out, err) = cli.run_bundle(&unique("inherit"), &b);
    assert_eq!(code, 0, "{err}");
    for kind in ["mnt", "net", "uts", "ipc"] {
        assert!(
            out.contains(&format!("{kind} {}", ns_of(kind))),
            "{kind} is not the caller's: {out}"
        );
    }
    assert!(
        !out.contains(&format!("pid {}", ns_of("pid"))),
        "pid was listed: a new one: {out}"
    );
    // Still inside its root filesystem.
    assert!(out.contains("bin\n") && !out.contains("boot\n"), "{out}");
    // Its mounts (proc, dev, ...) were made in our namespace and are gone with it.
    assert_eq!(mounts_below(&b.rootfs()), 0, "mounts left behind");
}

#[test]
#[ignore = "needs root and runc"]
fn deprecated_kernel_memory_limits_are_ignored() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["resources"] = json!({"memory": {"kernel": 67108864, "kernelTCP": 33554432}});
    b.save();
    let (skiff, runc) = both(&b);
    assert!(runc.status.success(), "{runc:?}");
    let (_, err) = text(&skiff);
    assert!(skiff.status.success(), "{err}");
    assert!(
        err.contains("linux.resources.memory.kernel is deprecated and ignored"),
        "{err}"
    );
    assert!(err.contains("kernelTCP is deprecated and ignored"), "{err}");
}

fn cap_bnd(status: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
#[ignore = "needs root"]
fn all_capabilities_means_what_the_runtime_holds() {
    let every: Vec<String> = (0..=63)
        .filter_map(|i| caps::all().into_iter().find(|c| c.index() == i))
        .map(|c| c.to_string())
        .collect();
    let mut b = Bundle::new(&["grep", "Cap", "/proc/self/status"]);
    for set in ["bounding", "effective", "permitted", "inheritable"] {
        b.config["process"]["capabilities"][set] = json!(every);
    }
    b.save();
    let cli = Cli::new();
    let (code, out, err) = cli.run_bundle(&unique("allcaps"), &b);
    assert_eq!(code, 0, "{err}");
    let mine = cap_bnd(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!(cap_bnd(&out), mine, "{out}");
    let eff = out.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert_eq!(
        u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap(),
        mine
    );
    if mine.count_ones() < every.len() as u32 {
        assert!(err.contains("does not hold"), "{err}");
    }
}

fn sleeper(env: &[&str]) -> Bundle {
    let mut b = Bundle::new(&["sleep", "300"]);
    b.config["process"]["env"] = json!(env);
    b.save();
    b
}

#[test]
#[ignore = "needs root and runc"]
fn exec_env_overrides_the_spec_and_ignore_paused() {
    let b = sleeper(&["PATH=/bin", "FOO=spec", "KEEP=1"]);
    let cli = Cli::new();
    let runc = runc();
    let (s, r) = (unique("skiff-exec"), unique("runc-exec"));
    cli.ok(&["run", "-d", "--bundle", path_str(&b.dir), &s]);
    let o = runc.run(&["run", "-d", "--bundle", path_str(&b.dir), &r]);
    assert!(o.status.success(), "{o:?}");
    let script = ["sh", "-c", "echo $FOO $KEEP; env | grep -c ^FOO="];
    let mut args = vec!["exec", "--env", "FOO=cli"];
    let ours = {
        let mut a = args.clone();
        a.push(&s);
        a.extend(script);
        cli.ok(&a)
    };
    args.push(&r);
    args.extend(script);
    let theirs = text(&runc.run(&args)).0;
    assert_eq!(ours, "cli 1\n1\n");
    assert_eq!(ours, theirs);

    // Paused: refused, unless --ignore-paused; the process then runs at resume.
    cli.ok(&["pause", &s]);
    let o = cli.run(&["exec", &s, "echo", "hi"]);
    assert!(
        !o.status.success() && text(&o).1.contains("--ignore-paused"),
        "{o:?}"
    );
    let mut cmd = cli.cmd();
    cmd.args(["exec", "--ignore-paused", &s, "echo", "resumed"]);
    let waiter = std::thread::spawn(move || cmd.stdin(Stdio::null()).output().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the exec ran in a frozen container");
    cli.ok(&["resume", &s]);
    let o = waiter.join().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(text(&o).0, "resumed\n");
    cli.ok(&["delete", "--force", &s]);
}

#[test]
#[ignore = "needs root and runc"]
fn start_container_hook_gets_the_process_environment() {
    let mut b = sleeper(&["PATH=/bin", "GREETING=hello"]);
    b.config["process"]["args"] = json!(["true"]);
    b.config["root"]["readonly"] = json!(false);
    b.config["hooks"] = json!({
        "startContainer": [
            {"path": "/bin/sh", "args": ["sh", "-c", "env | sort > /hook-env"]},
            {"path": "/bin/sh", "args": ["sh", "-c", "env | sort > /hook-own-env"], "env": ["OWN=1"]}
        ]
    });
    b.save();
    let read = |f: &str| std::fs::read_to_string(b.rootfs().join(f)).unwrap();
    let cli = Cli::new();
    let (code, _, err) = cli.run_bundle(&unique("hookenv"), &b);
    assert_eq!(code, 0, "{err}");
    let (ours, ours_own) = (read("hook-env"), read("hook-own-env"));
    let o = runc().run(&["run", "--bundle", path_str(&b.dir), &unique("runc-hook")]);
    assert!(o.status.success(), "{o:?}");
    let (theirs, theirs_own) = (read("hook-env"), read("hook-own-env"));
    assert!(ours.contains("GREETING=hello"), "{ours}");
    assert!(
        ours_own.contains("OWN=1") && !ours_own.contains("GREETING"),
        "{ours_own}"
    );
    let names = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .filter(|k| k != "PWD" && k != "SHLVL" && k != "_")
            .collect()
    };
    assert_eq!(names(&ours), names(&theirs), "{ours}\nvs runc\n{theirs}");
    assert_eq!(names(&ours_own), names(&theirs_own));
}

#[test]
#[ignore = "needs root and runc"]
fn recursive_mount_attributes_reach_every_submount() {
    // A host directory with a tmpfs mounted inside it, bound recursively with rro,rnosuid.
    let host = std::env::temp_dir().join(unique("skiff-rbind"));
    std::fs::create_dir_all(host.join("sub")).unwrap();
    let sub = host.join("sub");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "touch /data/x; echo top=$?; touch /data/sub/x; echo sub=$?; \
         grep -E ' /data(/sub)? ' /proc/self/mountinfo | cut -d' ' -f5,6",
    ]);
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data", "type": "bind", "source": path_str(&host),
        "options": ["rbind", "rro", "rnosuid"]
    }));
    b.save();
    let (skiff, runc) = both(&b);
    let _ = Command::new("umount").arg(&sub).status();
    let _ = std::fs::remove_dir_all(&host);
    let ((out, err), (r_out, r_err)) = (text(&skiff), text(&runc));
    assert!(skiff.status.success(), "{err}");
    assert!(runc.status.success(), "{r_err}");
    assert!(out.contains("top=1\nsub=1\n"), "a write got through: {out}");
    let mounts: Vec<&str> = out.lines().filter(|l| l.starts_with("/data")).collect();
    assert_eq!(mounts.len(), 2, "{out}");
    for m in &mounts {
        let opts = m.split(' ').nth(1).unwrap();
        assert!(
            opts.split(',').any(|o| o == "ro") && opts.split(',').any(|o| o == "nosuid"),
            "{m}"
        );
    }
    assert_eq!(out, r_out, "runc differs");
}

/// A seccomp agent: accepts one connection on `path`, takes the state and the fd, then
/// answers every notification with EROFS until the fd closes. Returns the state.
fn seccomp_agent(path: std::path::PathBuf) -> std::thread::JoinHandle<(serde_json::Value, usize)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        // Bounded: a runtime that never connects fails the test instead of hanging it.
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        assert_eq!(
            unsafe { libc::poll(&mut pfd, 1, 30_000) },
            1,
            "nobody connected"
        );
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => f.first().copied(),
                _ => None,
            })
            .expect("an fd came with the state");
        let n = msg.bytes;
        let state: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        // struct seccomp_notif (80 bytes) and seccomp_notif_resp (24 bytes).
        const RECV: libc::c_ulong = 0xc050_2100;
        const SEND: libc::c_ulong = 0xc018_2101;
        let mut answered = 0;
        loop {
            // POLLHUP once the filter's last process is gone; bounded in any case.
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) };
            if ready <= 0 || pfd.revents & libc::POLLIN == 0 {
                break;
            }
            let mut notif = [0u64; 10];
            if unsafe { libc::ioctl(fd, RECV, notif.as_mut_ptr()) } != 0 {
                break;
            }
            let resp: [u64; 3] = [notif[0], 0, (-libc::EROFS) as u32 as u64];
            if unsafe { libc::ioctl(fd, SEND, resp.as_ptr()) } == 0 {
                answered += 1;
            }
        }
        unsafe { libc::close(fd) };
        (state, answered)
    })
}

#[test]
#[ignore = "needs root and runc"]
fn seccomp_notifications_reach_the_listener() {
    let dir = std::env::temp_dir().join(unique("skiff-agent"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut b = Bundle::new(&["sh", "-c", "mkdir /tmp/x && echo made; echo after"]);
    b.config["root"]["readonly"] = json!(false);
    for (runtime, id) in [("skiff", unique("notify")), ("runc", unique("notify-runc"))] {
        let sock = dir.join(format!("{runtime}.sock"));
        b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": path_str(&sock),
            "listenerMetadata": "from-the-test",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        });
        b.save();
        let agent = seccomp_agent(sock);
        let o = if runtime == "skiff" {
            Cli::new().run(&["run", "--bundle", path_str(&b.dir), &id])
        } else {
            runc().run(&["run", "--bundle", path_str(&b.dir), &id])
        };
        let (out, err) = text(&o);
        let (state, answered) = agent.join().unwrap();
        // The agent's EROFS is what mkdir saw.
        assert!(
            out.contains("after") && !out.contains("made"),
            "{runtime}: {out}"
        );
        assert!(err.contains("Read-only file system"), "{runtime}: {err}");
        assert!(answered >= 1, "{runtime}");
        assert_eq!(state["fds"], json!(["seccompFd"]), "{runtime}: {state}");
        assert_eq!(state["metadata"], "from-the-test", "{runtime}: {state}");
        assert_eq!(state["state"]["id"], json!(id), "{runtime}: {state}");
        assert!(state["pid"].as_i64().unwrap() > 0, "{runtime}: {state}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[ignore = "needs root"]
fn memory_policy_is_applied() {
    let cli = Cli::new();
    for (policy, shown) in [
        (
            json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"}),
            "interleave:0",
        ),
        (
            json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}),
            "bind=static:0",
        ),
        (json!({"mode": "MPOL_DEFAULT"}), "default"),
    ] {
        let mut b = Bundle::new(&["sh", "-c", "grep -m1 heap /proc/self/numa_maps"]);
        b.config["linux"]["memoryPolicy"] = policy.clone();
        b.save();
        let (code, out, err) = cli.run_bundle(&unique("mempolicy"), &b);
        assert_eq!(code, 0, "{policy}: {err}");
        assert!(out.contains(&format!(" {shown} ")), "{policy}: {out}");
    }
    // Nodes for a mode that takes none: refused before anything starts.
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["memoryPolicy"] = json!({"mode": "MPOL_DEFAULT", "nodes": "0"});
    b.save();
    let (code, _, err) = cli.run_bundle(&unique("mempolicy"), &b);
    assert_ne!(code, 0);
    assert!(err.contains("takes no nodes"), "{err}");
}
