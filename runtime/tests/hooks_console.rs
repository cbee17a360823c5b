//! OCI hooks (all six, in order, state on stdin, timeouts) and terminals through
//! --console-socket. Needs root.

use common::*;
use serde_json::json;
use skiff_fixtures as common;
use std::os::unix::net::UnixListener;

fn hook(log: &str, name: &str) -> serde_json::Value {
    // The state arrives on stdin; keep its id and status next to the hook's name.
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read s; echo \"{name} $s\" >> {log}")]})
}

#[test]
#[ignore = "needs root"]
fn all_hooks_run_in_order_with_state() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["true"]);
    let logdir = b.dir.join("hooklog");
    std::fs::create_dir_all(&logdir).unwrap();
    let host_log = logdir.join("log");
    let hl = path_str(&host_log).to_string();
    b.config["hooks"] = json!({
        "prestart": [hook(&hl, "prestart")],
        "createRuntime": [hook(&hl, "createRuntime")],
        // Runs in the container's namespaces before pivot_root: host paths still resolve.
        "createContainer": [hook(&hl, "createContainer")],
        // Runs inside the container after pivot_root: container paths.
        "startContainer": [hook("/hooklog/log", "startContainer")],
        "poststart": [hook(&hl, "poststart")],
        "poststop": [hook(&hl, "poststop")]
    });
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind", "source": path_str(&logdir), "options": ["rbind", "rw"]}));
    b.save();
    let id = unique("hooks");
    cli.ok(&["create", "-b", path_str(&b.dir), &id]);
    let pid = cli.state(&id)["pid"].as_i64().unwrap();
    cli.ok(&["start", &id]);
    wait_for(|| cli.status(&id) == "stopped", "container exit");
    cli.ok(&["delete", &id]);
    let log = std::fs::read_to_string(&host_log).unwrap();
    let names: Vec<&str> = log
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{log}"
    );
    for line in log.lines() {
        let (name, state) = line.split_once(' ').unwrap();
        let v: serde_json::Value =
            serde_json::from_str(state).unwrap_or_else(|e| panic!("{name}: {e}: {state}"));
        assert_eq!(v["id"], id.as_str(), "{name}");
        assert_eq!(v["bundle"], path_str(&b.dir), "{name}");
        if name != "poststop" {
            assert_eq!(v["pid"], pid, "{name} sees the init pid");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn failing_or_slow_hook_fails_create_cleanly() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] =
        json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    b.save();
    let id = unique("slowhook");
    let t = std::time::Instant::now();
    let o = cli.run(&["create", "-b", path_str(&b.dir), &id]);
    assert!(!o.status.success());
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("prestart hook #0") && err.contains("timed out"),
        "{err}"
    );
    assert!(!cli.root.join(&id).exists());
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    b.save();
    let o = cli.run(&["create", "-b", path_str(&b.dir), &id]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("createRuntime hook #0 (/bin/false): exited"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!cli.root.join(&id).exists());
}

#[test]
#[ignore = "needs root"]
fn console_socket_receives_the_pty_master() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "tty; stty size; echo done"]);
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    b.save();
    let sock_path = b.dir.join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let id = unique("console");
    let accept = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        skiff_runtime::console::recv_master(&conn).unwrap()
    });
    cli.ok(&[
        "create",
        "-b",
        path_str(&b.dir),
        "--console-socket",
        path_str(&sock_path),
        &id,
    ]);
    let master = accept.join().unwrap();
    cli.ok(&["start", &id]);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the slave side closes (EIO) once the process exits.
    while let Ok(n) = nix::unistd::read(&master, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("30 100"), "console size applied: {text}");
    assert!(text.contains("done"), "{text}");
    // Without a socket, a terminal config is refused for create.
    let id2 = unique("noconsole");
    let o = cli.run(&["create", "-b", path_str(&b.dir), &id2]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("console socket"));
    cli.ok(&["delete", "-f", &id]);
}
