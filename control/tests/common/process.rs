#![allow(dead_code)]
//! skiff-control as a process (HTTPS on a loopback port the kernel picks) and the real
//! kubectl against it, for the tests that need the binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The skiff-control binary: cargo names it for this crate's tests; other crates'
/// tests (which include this file) use the workspace build.
pub fn binary() -> PathBuf {
    option_env!("CARGO_BIN_EXE_skiff-control")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-control")
        })
}

pub struct Control {
    child: Child,
    /// Its log lines so far (stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub port: u16,
    pub dir: PathBuf,
    pub address: String,
}

impl Control {
    pub fn start(dir: &Path, extra: &[&str]) -> Control {
        Control::start_in(None, dir, extra)
    }

    /// Started inside a network namespace (`/run/netns/NAME`): its loopback port is
    /// reachable only from there.
    pub fn start_in(netns: Option<&str>, dir: &Path, extra: &[&str]) -> Control {
        Control::start_at(netns, "127.0.0.1", dir, extra)
    }

    /// Listening on `address` (an address of that network namespace).
    pub fn start_at(netns: Option<&str>, address: &str, dir: &Path, extra: &[&str]) -> Control {
        let mut child = in_netns(netns, binary())
            .arg("--data-dir")
            .arg(dir)
            .args(["--bind-address", address, "--secure-port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // Other lines (leader election) may come first: kept in the log.
        let mut before = Vec::new();
        let first = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| {
                before.push(l.clone());
                l.contains(&format!("https://{address}:"))
            })
            .expect("serving line");
        // "serving the Kubernetes API on https://ADDRESS:PORT (CA …)"
        let port = first
            .split(&format!("https://{address}:"))
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{first}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(before));
        let keep = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        Control {
            child,
            log,
            port,
            dir: dir.to_path_buf(),
            address: address.to_string(),
        }
    }

    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        let o = Command::new(binary())
            .arg("--data-dir")
            .arg(&self.dir)
            .args([
                "kubeconfig",
                "--server",
                &format!("https://{}:{}", self.address, self.port),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let p = self.dir.join(name);
        std::fs::write(&p, &o.stdout).unwrap();
        p
    }
}

impl Control {
    /// kill -9, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines containing `what`.
    pub fn log_lines(&self, what: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(what)).cloned().collect()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command run in a network namespace (only that; not `ip netns exec`'s mount namespace).
pub fn in_netns(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Run kubectl (no kubeconfig unless the args name one), optionally with stdin.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_in(None, args, stdin)
}

pub fn kubectl_in(netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = in_netns(netns, "kubectl");
    c.args(args)
        .env("KUBECONFIG", "/dev/null")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("kubectl");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The oldest and newest kubectl installed (1.27 and 1.33), else the one on PATH.
pub fn kubectl_range() -> Vec<String> {
    let mut v: Vec<String> = ["27", "33"]
        .iter()
        .map(|m| format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}"))
        .filter(|p| Path::new(p).exists())
        .collect();
    if v.is_empty() {
        v.push("kubectl".into());
    }
    v
}

/// Run kubectl `bin` with kubeconfig `kc`: (exit code, stdout, stderr).
pub fn kubectl_as(
    bin: &str,
    kc: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
