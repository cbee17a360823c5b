//! The in-VM agent and its host-side client. The agent reads JSON requests, one per line,
//! from a virtio-serial port and answers each with the command's exit code and output.
//! The host reaches the port through QEMU's unix socket chardev; a per-node flock keeps
//! concurrent tests from interleaving on the single stream.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const PORT_NAME: &str = "skiff.agent";

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    #[serde(default)]
    pub stdin: String,
    /// Seconds before the command is killed (0: no limit).
    #[serde(default)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Response {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Find the agent's virtio-serial port by name (no udev in the VM).
fn find_port() -> Result<std::path::PathBuf> {
    for e in std::fs::read_dir("/sys/class/virtio-ports")
        .context("no virtio-ports")?
        .flatten()
    {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == PORT_NAME {
            return Ok(Path::new("/dev").join(e.file_name()));
        }
    }
    Err(anyhow!("virtio port {PORT_NAME} not found"))
}

/// Run one command. Output goes through files, not pipes: a process the command leaves
/// running in the background (a detached container, a server) keeps its copy of stdout
/// open, and a pipe would then never reach EOF.
fn run(req: &Request) -> Response {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let fail = |code: i32, msg: String| Response {
        code,
        stdout: String::new(),
        stderr: msg,
    };
    let Some((prog, args)) = req.argv.split_first() else {
        return fail(127, "empty command".into());
    };
    let base = format!(
        "/run/skiff-agent-{}",
        SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let (inp, outp, errp) = (
        format!("{base}.in"),
        format!("{base}.out"),
        format!("{base}.err"),
    );
    let files = (|| -> std::io::Result<(std::fs::File, std::fs::File, std::fs::File)> {
        std::fs::write(&inp, &req.stdin)?;
        Ok((
            std::fs::File::open(&inp)?,
            std::fs::File::create(&outp)?,
            std::fs::File::create(&errp)?,
        ))
    })();
    let (i, o, e) = match files {
        Ok(f) => f,
        Err(e) => return fail(127, format!("agent: {e}")),
    };
    let child = Command::new(prog)
        .args(args)
        .stdin(i)
        .stdout(o)
        .stderr(e)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(127, format!("{prog}: {e}")),
    };
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    if req.timeout > 0 {
        let t = req.timeout;
        std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(t)).is_err() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
    }
    let status = child.wait();
    let _ = tx.send(());
    let read =
        |p: &str| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let resp = match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            Response {
                code,
                stdout: read(&outp),
                stderr: read(&errp),
            }
        }
        Err(e) => fail(127, e.to_string()),
    };
    for p in [&inp, &outp, &errp] {
        let _ = std::fs::remove_file(p);
    }
    resp
}

/// The agent loop (inside the VM). A read of 0 bytes means the host side closed its
/// connection (virtio-console reports that as EOF): wait for the next client instead of
/// exiting, so back-to-back requests never hit a respawning agent.
pub fn serve() -> Result<()> {
    use std::io::Read;
    let port = find_port()?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .with_context(|| format!("open {}", port.display()))?;
    let mut out = f.try_clone()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            buf.clear(); // a request cut short by a disconnect is dropped
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            let resp = match serde_json::from_str::<Request>(&line) {
                Ok(req) => run(&req),
                Err(e) => Response {
                    code: 2,
                    stdout: String::new(),
                    stderr: format!("bad request: {e}"),
                },
            };
            let mut s = serde_json::to_string(&resp)?;
            s.push('\n');
            out.write_all(s.as_bytes())?;
        }
    }
}

/// Host side, for liveness checks: give up after `wait` without an answer.
pub fn call_timeout(socket: &Path, argv: &[String], wait: Duration) -> Result<Response> {
    exchange(
        socket,
        &Request {
            argv: argv.to_vec(),
            stdin: String::new(),
            timeout: wait.as_secs(),
        },
        wait,
    )
}

/// Host side: run `argv` in the VM behind `socket`.
pub fn call(socket: &Path, argv: &[String], stdin: &str, timeout: Duration) -> Result<Response> {
    let req = Request {
        argv: argv.to_vec(),
        stdin: stdin.to_string(),
        timeout: timeout.as_secs(),
    };
    // Leave the guest time to finish; the agent enforces the command timeout itself.
    exchange(socket, &req, timeout + Duration::from_secs(30))
}

fn exchange(socket: &Path, req: &Request, read_timeout: Duration) -> Result<Response> {
    let lock_path = socket.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    s.set_read_timeout(Some(read_timeout))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    r.read_line(&mut resp).context("read agent response")?;
    if resp.is_empty() {
        return Err(anyhow!("agent closed the connection"));
    }
    drop(lock);
    serde_json::from_str(&resp).with_context(|| format!("bad agent response {resp:?}"))
}
