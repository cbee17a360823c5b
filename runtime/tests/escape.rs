//! Attacks on the host from inside a container, each against a real copy of the binary
//! or a real host path: overwriting the runtime binary through /proc/PID/exe
//! (CVE-2019-5736), a host fd reaching the container (CVE-2024-21626), proc and sysfs
//! mounted through a symlink. Needs root and gcc (static libc) for the attacker program.

use common::*;
use serde_json::json;
use sha2::Digest;
use skiff_fixtures as common;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const TRIES: usize = 400;

/// A copy of the runtime binary, so a successful attack cannot break the workspace's.
fn runtime_copy() -> (PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(unique("skiff-exe"));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("skiff-runtime");
    std::fs::copy(skiff_runtime_bin(), &copy).unwrap();
    (copy.clone(), digest(&copy))
}

fn digest(p: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

/// Build the attacker (tests/attacks/exe_overwrite.c) statically into the rootfs.
fn install_attacker(b: &Bundle) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attacks/exe_overwrite.c");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(b.rootfs().join("bin/attack"))
        .arg(&src)
        .output()
        .expect("gcc (apt-get install gcc libc6-dev)");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stop the attacker and return its counters.
fn attack_report(cli: &Cli, id: &str, b: &Bundle) -> std::collections::HashMap<String, i64> {
    cli.ok(&["exec", id, "touch", "/stop"]);
    let log = b.rootfs().join("attack.log");
    wait_for(
        || std::fs::read_to_string(&log).is_ok_and(|s| s.contains("written=")),
        "the attacker's report",
    );
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("attacker: {text}");
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn attacker_bundle() -> Bundle {
    let mut b = Bundle::new(&["sh", "-c", "/bin/attack 300 > /attack.log"]);
    b.config["root"]["readonly"] = json!(false);
    b.save();
    install_attacker(&b);
    b
}

#[test]
#[ignore = "needs root"]
fn exec_of_proc_self_exe_cannot_overwrite_the_runtime() {
    let (copy, before) = runtime_copy();
    let cli = Cli::with_binary(copy.clone());
    let b = attacker_bundle();
    // The classic entry: a file in the image that makes the kernel run the caller's binary.
    let evil = b.rootfs().join("bin/evil");
    std::fs::write(&evil, "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = unique("escape-exec");
    cli.ok(&["run", "-d", "--bundle", path_str(&b.dir), &id]);
    for i in 0..TRIES {
        // Once an attack has succeeded the copy may not even start (ETXTBSY): the digest
        // below tells.
        let o = cli.cmd().args(["exec", &id, "/bin/evil"]).output();
        if i == 0 {
            // The runtime never runs inside: it would have said it knows no command
            // "/bin/evil".
            let o = o.unwrap();
            let text = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{text}");
            assert!(
                !text.contains("unrecognized subcommand"),
                "the runtime ran inside: {text}"
            );
        }
    }
    let r = attack_report(&cli, &id, &b);
    cli.ok(&["delete", "--force", &id]);
    assert_eq!(
        digest(&copy),
        before,
        "the runtime binary was changed: {r:?}"
    );
    assert_eq!(r["written"], 0, "{r:?}");
    // The attacker was there: it met the entering processes (refused, not dumpable).
    assert!(
        r["eacces"] > 0,
        "the attacker never saw a process enter: {r:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_created_init_cannot_be_reached_from_a_shared_pid_namespace() {
    let (copy, before) = runtime_copy();
    let cli = Cli::with_binary(copy.clone());
    let b = attacker_bundle();
    let id = unique("escape-host");
    cli.ok(&["run", "-d", "--bundle", path_str(&b.dir), &id]);
    let pid = cli.state(&id)["pid"].as_i64().unwrap();
    // A second container joins the attacker's PID namespace and is only created: its init
    // (a fork of the runtime) waits for `start` where the attacker can see it.
    let mut victim = Bundle::new(&["true"]);
    for ns in victim.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "pid" {
            ns["path"] = json!(format!("/proc/{pid}/ns/pid"));
        }
    }
    victim.save();
    for i in 0..TRIES {
        let v = format!("{id}-v{i}");
        cli.ok(&["create", "--bundle", path_str(&victim.dir), &v]);
        std::thread::sleep(std::time::Duration::from_millis(2));
        cli.ok(&["delete", "--force", &v]);
    }
    let r = attack_report(&cli, &id, &b);
    cli.ok(&["delete", "--force", &id]);
    assert_eq!(
        digest(&copy),
        before,
        "the runtime binary was changed: {r:?}"
    );
    assert_eq!(r["written"], 0, "{r:?}");
    // The waiting init is not dumpable: its /proc entries are closed to the container
    // (what it can open is the sealed exec stub of the final `touch`, counted apart).
    assert_eq!(r["opened"], 0, "the created init's exe was opened: {r:?}");
    assert!(
        r["eacces"] > 0,
        "the attacker never saw a created init: {r:?}"
    );
}

/// A host directory with a marker file, and its fd left open (not close-on-exec) in the
/// runtime's process at `fd`, as a careless caller would leak it.
fn leak_dir_fd(cmd: &mut std::process::Command, fd: i32) -> PathBuf {
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(unique("skiff-hostdir"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("host-secret"), "host data\n").unwrap();
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    unsafe {
        cmd.pre_exec(move || {
            let f = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if f < 0 || libc::dup2(f, fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    dir
}

fn output(mut cmd: std::process::Command) -> (bool, String) {
    let o = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
#[ignore = "needs root"]
fn a_leaked_fd_cannot_be_the_working_directory() {
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "pwd; ls; cat host-secret"]);
    for (preserve, fd) in [(0, 7), (5, 7)] {
        // Not preserved: closed before setup. Preserved: open in the container, but the
        // working directory it names is outside the root and refused.
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{fd}"));
        b.save();
        let mut cmd = cli.cmd();
        let preserve_arg = format!("--preserve-fds={preserve}");
        cmd.args(["run", &preserve_arg, "--bundle", path_str(&b.dir)])
            .arg(unique("escape-cwd"));
        let host = leak_dir_fd(&mut cmd, fd);
        let (ok, text) = output(cmd);
        std::fs::remove_dir_all(host).unwrap();
        assert!(!ok, "started with preserve {preserve}: {text}");
        assert!(
            !text.contains("host data"),
            "the container read the host: {text}"
        );
        if preserve > 0 {
            assert!(text.contains("outside the container"), "{text}");
        }
    }
    // exec --cwd the same way, into a running container.
    let run = Bundle::new(&["sleep", "60"]);
    let id = unique("escape-exec-cwd");
    cli.ok(&["run", "-d", "--bundle", path_str(&run.dir), &id]);
    let mut cmd = cli.cmd();
    cmd.args([
        "exec",
        "--cwd",
        "/proc/self/fd/7",
        &id,
        "cat",
        "host-secret",
    ]);
    let host = leak_dir_fd(&mut cmd, 7);
    let (ok, text) = output(cmd);
    std::fs::remove_dir_all(host).unwrap();
    cli.ok(&["delete", "--force", &id]);
    assert!(!ok && !text.contains("host data"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn no_inherited_fd_reaches_the_container() {
    let cli = Cli::new();
    let b = Bundle::new(&["ls", "/proc/self/fd"]);
    let mut cmd = cli.cmd();
    cmd.args(["run", "--bundle", path_str(&b.dir)])
        .arg(unique("escape-fds"));
    let host = leak_dir_fd(&mut cmd, 9);
    let (ok, text) = output(cmd);
    std::fs::remove_dir_all(host).unwrap();
    assert!(ok, "{text}");
    // stdio and ls's own directory fd.
    let fds: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{text}");
}

#[test]
#[ignore = "needs root"]
fn proc_and_sys_are_never_mounted_through_a_symlink() {
    let cli = Cli::new();
    for target in ["proc", "sys"] {
        let b = Bundle::new(&["true"]);
        // The rootfs points the mount point elsewhere inside itself (a host path would do
        // the same after resolution): runc refuses both.
        let p = b.rootfs().join(target);
        std::fs::remove_dir(&p).unwrap();
        std::fs::create_dir_all(b.rootfs().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &p).unwrap();
        let (code, out, err) = cli.run_bundle(&unique("escape-link"), &b);
        assert_ne!(code, 0, "{target} through a symlink was accepted: {out}");
        assert!(
            err.contains("must be mounted on ordinary directory"),
            "{target}: {err}"
        );
        assert!(
            std::fs::read_dir(b.rootfs().join("elsewhere"))
                .unwrap()
                .next()
                .is_none(),
            "something was mounted through the link"
        );
    }
}
