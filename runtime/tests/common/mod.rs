//! Shared fixtures for root integration tests: busybox bundles and a CLI wrapper.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod node;
pub mod registry;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A workspace binary: cargo names this crate's own; tests of other crates that include
/// these fixtures use the workspace build (scripts/test-all.sh builds all binaries first).
fn workspace_bin(own: Option<&'static str>, name: &str) -> PathBuf {
    let p = own.map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name)
    });
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

pub fn skiff_runtime_bin() -> PathBuf {
    workspace_bin(option_env!("CARGO_BIN_EXE_skiff-runtime"), "skiff-runtime")
}

pub fn skiffctl_bin() -> PathBuf {
    workspace_bin(option_env!("CARGO_BIN_EXE_skiffctl"), "skiffctl")
}

/// Root integration tests are `#[ignore = "needs root"]`: run when asked for
/// (`--run-ignored`, as .ci/run does as root), and then an unmet need is a failure, never
/// a silent pass.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (run with --run-ignored only as root)"
    );
    assert!(
        busybox().is_some(),
        "needs a static busybox (apt-get install busybox-static)"
    );
}

pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A unique name for containers, directories and cgroups of one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A bundle directory with a busybox rootfs and a config from `skiff-runtime spec`.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = std::env::temp_dir().join(unique("skiff-bundle"));
        let bin = dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for d in ["proc", "sys", "dev", "etc", "tmp", "root"] {
            std::fs::create_dir_all(dir.join("rootfs").join(d)).unwrap();
        }
        std::fs::copy(busybox().unwrap(), bin.join("busybox")).unwrap();
        for applet in [
            "sh", "cat", "echo", "id", "ls", "sleep", "grep", "hostname", "mkdir", "touch", "pwd",
            "head", "tr", "seq", "wc", "readlink", "mount", "ps", "dd", "true", "false", "env",
            "test", "ulimit", "stat", "tail",
        ] {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        std::fs::write(
            dir.join("rootfs/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.join("rootfs/etc/group"), "root:x:0:\n").unwrap();
        let mut config = skiff_runtime::features::default_spec(false);
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = serde_json::json!(args);
        let b = Bundle { dir, config };
        b.save();
        b
    }

    pub fn save(&self) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The CLI with a private state root, so tests never see each other's containers.
pub struct Cli {
    pub root: PathBuf,
    /// The runtime binary this CLI runs (the workspace's unless a test made a copy).
    pub bin: PathBuf,
}

impl Cli {
    pub fn new() -> Cli {
        Cli::with_binary(skiff_runtime_bin())
    }

    pub fn with_binary(bin: PathBuf) -> Cli {
        let root = std::env::temp_dir().join(unique("skiff-root"));
        Cli { root, bin }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    /// Run with stdout/stderr in files, not pipes: a container started by `create` or
    /// `run -d` inherits them and would keep a pipe open forever.
    pub fn run(&self, args: &[&str]) -> Output {
        output_via_files(self.cmd().args(args))
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "skiff-runtime {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `run` a bundle to completion: (exit code, stdout, stderr).
    pub fn run_bundle(&self, id: &str, b: &Bundle) -> (i32, String, String) {
        let o = self.run(&["run", "--bundle", b.dir.to_str().unwrap(), id]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        // Force-delete anything a failed test left behind, then the root.
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Run `cmd` (stdin empty) with stdout/stderr in files, not pipes: a container it
/// detaches inherits them and would keep a pipe open until it exits.
pub fn output_via_files(cmd: &mut Command) -> Output {
    let base = std::env::temp_dir().join(unique("skiff-out"));
    let (out, err) = (base.with_extension("out"), base.with_extension("err"));
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let o = Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    };
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(err);
    o
}

pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    for _ in 0..500 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Start a port-forward command (kubectl's or skiffctl's) and return the local port from
/// its "Forwarding from 127.0.0.1:PORT -> REMOTE" line; the rest of its output is drained
/// (kubectl writes a line per connection and must not hit a closed pipe).
pub fn forwarding_port(mut cmd: Command) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let port = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no forwarding line: {first:?}"));
    (child, port)
}

/// An HTTP/1.0 GET of `path` on a loopback port: the whole answer.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r
}

/// Run `cmd` with `input` on its stdin (written from a thread, then closed).
pub fn output_with_input(mut cmd: Command, input: impl Into<Vec<u8>>) -> Output {
    let input: Vec<u8> = input.into();
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = i.write_all(&input);
    });
    child.wait_with_output().unwrap()
}
