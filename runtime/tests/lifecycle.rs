//! OCI lifecycle through the CLI: create → start → kill → delete, run, exec, pause/resume,
//! state under concurrency and cleanup after failures. Needs root.

use common::*;
use serde_json::json;
use skiff_fixtures as common;

#[test]
#[ignore = "needs root"]
fn create_start_kill_delete() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique("life");
    let pidfile = b.dir.join("pid");
    // Options after the id, as youki's suite and containerd use them.
    cli.ok(&[
        "create",
        &id,
        "--bundle",
        path_str(&b.dir),
        "--pid-file",
        path_str(&pidfile),
    ]);
    let st = cli.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["ociVersion"], "1.2.0");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid.to_string()
    );
    // Blocked on the exec fifo: the user process has not run yet.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("sleep"),
        "user process ran before start"
    );

    cli.ok(&["start", &id]);
    assert_eq!(cli.status(&id), "running");
    wait_for(
        || {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .starts_with("sleep")
        },
        "sleep to exec",
    );
    let again = cli.run(&["start", &id]);
    assert!(!again.status.success(), "second start must fail");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not created"));

    let del = cli.run(&["delete", &id]);
    assert!(
        !del.status.success(),
        "delete of a running container needs --force"
    );

    cli.ok(&["kill", &id, "KILL"]);
    wait_for(|| cli.status(&id) == "stopped", "stopped");
    assert_eq!(cli.state(&id)["pid"], 0);
    cli.ok(&["delete", &id]);
    let gone = cli.run(&["state", &id]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
    assert!(!cli.root.join(&id).exists());
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/pids/skiff/{id}")).exists()
            && !std::path::Path::new(&format!("/sys/fs/cgroup/skiff/{id}")).exists(),
        "cgroup removed"
    );
}

#[test]
#[ignore = "needs root"]
fn run_returns_exit_status_and_output() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let (code, out, err) = cli.run_bundle(&unique("exit"), &b);
    assert_eq!(code, 7, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err"));
    // Without a pid namespace the shell is not a pid-1 init, so SIGKILL to itself works.
    let mut b = Bundle::new(&["sh", "-c", "kill -9 $$"]);
    b.config["linux"]["namespaces"] = json!([{"type": "mount"}]);
    b.config.as_object_mut().unwrap().remove("hostname");
    b.save();
    let (code, _, _) = cli.run_bundle(&unique("sig"), &b);
    assert_eq!(code, 137, "killed by SIGKILL reads as 128+9");
    assert_eq!(
        cli.ok(&["list", "-q"]),
        "",
        "run removes the container after it exits"
    );
}

#[test]
#[ignore = "needs root"]
fn delete_created_container_kills_it() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["true"]);
    let id = unique("delc");
    cli.ok(&["create", "--bundle", path_str(&b.dir), &id]);
    let pid = cli.state(&id)["pid"].as_i64().unwrap();
    cli.ok(&["delete", &id]);
    wait_for(
        || skiff_runtime::state::proc_stat(pid as i32).is_none_or(|(s, _)| s == 'Z'),
        "init gone",
    );
}

#[test]
#[ignore = "needs root"]
fn force_delete_and_kill_all() {
    require_root();
    let cli = Cli::new();
    // No pid namespace: the children of init survive init unless the whole cgroup is killed.
    let mut b = Bundle::new(&["sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000"]);
    b.config["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]);
    b.config["hostname"] = json!("kill-all");
    b.save();
    let id = unique("killall");
    cli.ok(&["run", "-d", "--bundle", path_str(&b.dir), &id]);
    wait_for(
        || {
            serde_json::from_str::<Vec<i32>>(&cli.ok(&["ps", "--format", "json", &id]))
                .unwrap()
                .len()
                >= 3
        },
        "3 processes",
    );
    let pids: Vec<i32> = serde_json::from_str(&cli.ok(&["ps", "--format", "json", &id])).unwrap();
    let table = cli.ok(&["ps", &id]);
    assert!(
        table.contains("PID") && table.contains("sleep 1000"),
        "{table}"
    );
    cli.ok(&["kill", "--all", &id, "9"]);
    for p in &pids {
        let p = *p;
        wait_for(
            || skiff_runtime::state::proc_stat(p).is_none_or(|(s, _)| s == 'Z'),
            "process killed",
        );
    }
    let b2 = Bundle::new(&["sleep", "1000"]);
    let id2 = unique("force");
    cli.ok(&["run", "--detach", "--bundle", path_str(&b2.dir), &id2]);
    cli.ok(&["delete", "--force", &id2]);
    assert!(!cli.root.join(&id2).exists());
    // --force on a missing container succeeds, like runc.
    cli.ok(&["delete", "--force", "no-such-container"]);
}

#[test]
#[ignore = "needs root"]
fn exec_into_running_container() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique("exec");
    cli.ok(&["run", "-d", "--bundle", path_str(&b.dir), &id]);
    let out = cli.ok(&["exec", &id, "cat", "/proc/1/cmdline"]);
    assert!(
        out.starts_with("sleep"),
        "exec sees the container's pid 1: {out:?}"
    );
    let out = cli.ok(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "-u",
        "65534:65534",
        &id,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u) $(id -g)",
    ]);
    assert_eq!(out.trim(), "bar /tmp 65534 65534");
    assert_eq!(cli.ok(&["exec", &id, "hostname"]).trim(), "skiff");
    let o = cli.run(&["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let o = cli.run(&["exec", &id, "no-such-binary"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("executable file not found"));
    // --process with a process.json, detached, with a pid file.
    let pj = b.dir.join("process.json");
    std::fs::write(&pj, json!({"args": ["sleep", "500"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}).to_string()).unwrap();
    let pidf = b.dir.join("exec.pid");
    cli.ok(&[
        "exec",
        "--process",
        path_str(&pj),
        "--detach",
        "--pid-file",
        path_str(&pidf),
        &id,
    ]);
    let epid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_str(&cli.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(
        pids.contains(&epid),
        "exec'd process is in the container cgroup"
    );
    cli.ok(&["delete", "-f", &id]);
    let o = cli.run(&["exec", &id, "true"]);
    assert!(!o.status.success());
}

#[test]
#[ignore = "needs root"]
fn pause_and_resume() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique("pause");
    cli.ok(&["run", "-d", "--bundle", path_str(&b.dir), &id]);
    cli.ok(&["pause", &id]);
    assert_eq!(cli.status(&id), "paused");
    let pid = cli.state(&id)["pid"].as_i64().unwrap() as i32;
    let (st, _) = skiff_runtime::state::proc_stat(pid).unwrap();
    assert!(st == 'D' || st == 'S', "frozen task state {st}");
    assert!(!cli.run(&["resume", &id]).status.success() || cli.status(&id) == "running");
    if cli.status(&id) == "paused" {
        cli.ok(&["resume", &id]);
    }
    assert_eq!(cli.status(&id), "running");
    assert!(
        !cli.run(&["resume", &id]).status.success(),
        "resume of a running container fails"
    );
    cli.ok(&["delete", "-f", &id]);
}

#[test]
#[ignore = "needs root"]
fn list_formats() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique("list");
    cli.ok(&["create", "--bundle", path_str(&b.dir), &id]);
    let table = cli.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("created"));
    let v: serde_json::Value =
        serde_json::from_str(&cli.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["status"], "created");
    cli.ok(&["delete", &id]);
}

#[test]
#[ignore = "needs root"]
fn concurrent_starts_serialize() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique("race");
    cli.ok(&["create", "--bundle", path_str(&b.dir), &id]);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            cli.cmd()
                .args(["start", &id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let ok = handles
        .into_iter()
        .map(|mut h| h.wait().unwrap().success())
        .filter(|s| *s)
        .count();
    assert_eq!(ok, 1, "exactly one start wins");
    assert_eq!(cli.status(&id), "running");
    cli.ok(&["delete", "-f", &id]);
}

#[test]
#[ignore = "needs root"]
fn failed_create_leaves_nothing() {
    require_root();
    let cli = Cli::new();
    let b = Bundle::new(&["/no/such/binary"]);
    let id = unique("fail");
    let o = cli.run(&["create", "--bundle", path_str(&b.dir), &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/no/such/binary"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!cli.root.join(&id).exists(), "no state left");
    for d in [
        format!("/sys/fs/cgroup/pids/skiff/{id}"),
        format!("/sys/fs/cgroup/memory/skiff/{id}"),
        format!("/sys/fs/cgroup/skiff/{id}"),
    ] {
        assert!(!std::path::Path::new(&d).exists(), "{d} left behind");
    }
    // No mount of the rootfs leaked into the host mount table.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(path_str(&b.rootfs())),
        "rootfs mount leaked"
    );
    // The same id is usable afterwards.
    let ok = Bundle::new(&["true"]);
    cli.ok(&["run", "--bundle", path_str(&ok.dir), &id]);
}

#[test]
#[ignore = "needs root"]
fn invalid_configs_are_rejected_by_name() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["true"]);
    let id = unique("inv");
    b.config["ociVersion"] = json!("9.0.0");
    b.save();
    let o = cli.run(&["create", "-b", path_str(&b.dir), &id]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ociVersion \"9.0.0\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    b.config["ociVersion"] = json!("1.3.0");
    b.config["linux"]["intelRdt"] = json!({"closID": "x"});
    b.save();
    let o = cli.run(&["create", "-b", path_str(&b.dir), &id]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("linux.intelRdt"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(b.dir.join("config.json"), "{ not json").unwrap();
    let o = cli.run(&["create", "-b", path_str(&b.dir), &id]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid JSON"));
    assert!(!cli.root.join(&id).exists());
    // JSON log format for containerd's shim.
    let log = b.dir.join("log.json");
    let o = cli.run(&[
        "--log",
        path_str(&log),
        "--log-format",
        "json",
        "create",
        "-b",
        path_str(&b.dir),
        &id,
    ]);
    assert!(!o.status.success());
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("not valid JSON"));
    // 1.3.0 is accepted.
    let mut good = Bundle::new(&["true"]);
    good.config["ociVersion"] = json!("1.3.0");
    good.save();
    cli.ok(&["run", "-b", path_str(&good.dir), &unique("v13")]);
}

#[test]
fn spec_and_features() {
    let dir = std::env::temp_dir().join(unique("spec"));
    std::fs::create_dir_all(&dir).unwrap();
    let cli = Cli::new();
    cli.ok(&["spec", "--bundle", path_str(&dir)]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["process"]["args"], json!(["sh"]));
    assert!(
        !cli.run(&["spec", "--bundle", path_str(&dir)])
            .status
            .success(),
        "refuses to overwrite"
    );
    let f: serde_json::Value = serde_json::from_str(&cli.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["seccomp"]["actions"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ACT_ERRNO")));
    assert!(
        cli.run(&["--systemd-cgroup", "list"])
            .stderr
            .starts_with(b"skiff-runtime: --systemd-cgroup")
            || !cli.run(&["--systemd-cgroup", "list"]).status.success()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs root"]
fn preserve_fds_passes_extra_descriptors() {
    require_root();
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let cli = Cli::new();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "echo through-fd3 >&3 && echo wrote || echo no-fd3",
    ]);
    let run = |preserve: &str| -> (String, String) {
        let target = b.dir.join(format!("fd3-{preserve}"));
        let file = std::fs::File::create(&target).unwrap();
        let fd = file.as_raw_fd();
        let mut cmd = cli.cmd();
        cmd.args([
            "run",
            "--preserve-fds",
            preserve,
            "-b",
            path_str(&b.dir),
            &unique("fds"),
        ]);
        cmd.stdin(std::process::Stdio::null());
        // SAFETY: dup2 is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // dup2(3, 3) would keep close-on-exec: clear it explicitly.
                if (fd != 3 && libc::dup2(fd, 3) < 0) || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        drop(file);
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            std::fs::read_to_string(&target).unwrap(),
        )
    };
    let (out, written) = run("1");
    assert_eq!(
        (out.as_str(), written.as_str()),
        ("wrote\n", "through-fd3\n")
    );
    let (out, written) = run("0");
    assert_eq!(
        (out.as_str(), written.as_str()),
        ("no-fd3\n", ""),
        "fd 3 is not leaked without --preserve-fds"
    );
}
