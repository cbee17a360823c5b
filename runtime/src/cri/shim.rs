//! The container monitor (`skiff-runtime shim`): one small process per CRI container,
//! started by the CRI server, outliving it. It creates the container with the monitor's
//! pipes as its stdio, turns that output into the CRI log, reaps the container's init
//! (as child subreaper) and records the exit in a file. Because the monitor owns the
//! pipes and the wait, a kill -9 of the CRI server loses neither output nor exit codes.

use super::{attach, logs};
use crate::container::{CreateOptions, Runtime};
use crate::error::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Beside the exit file: how many log reopens the monitor has done.
pub const REOPENED_FILE: &str = "log-reopened";

#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub id: String,
    pub bundle: PathBuf,
    /// skiff-runtime state root.
    pub root: PathBuf,
    pub log_path: PathBuf,
    pub exit_file: PathBuf,
    /// Keep the container's stdin open (a pipe nobody writes yet) instead of /dev/null.
    pub stdin: bool,
    pub tty: bool,
}

/// What the monitor writes to `exit_file` when the container's init is gone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    /// Unix nanoseconds.
    pub finished_at: i64,
    /// "Completed", "Error" or "OOMKilled", as the kubelet expects.
    pub reason: String,
}

impl Exit {
    pub fn load(path: &Path) -> Option<Exit> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// First line the monitor writes to its stdout (the server's pipe) once create is done.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub pid: Option<i32>,
    pub error: Option<String>,
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe")
}

fn dup2(from: RawFd, to: RawFd) -> Result<()> {
    nix::errno::Errno::result(unsafe { libc::dup2(from, to) })
        .map(drop)
        .step(|| format!("dup2 onto fd {to}"))
}

/// Run the monitor; returns the process exit code.
pub fn run(args: &ShimArgs) -> i32 {
    // The server's pipe: keep a private copy, fd 1 becomes the container's stdout.
    let sync = match nix::fcntl::fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(1) },
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
    ) {
        Ok(fd) => unsafe { std::fs::File::from_raw_fd(fd) },
        Err(_) => return 2,
    };
    let mut sync = Some(sync);
    let report = |sync: &mut Option<std::fs::File>, r: Ready| {
        if let Some(mut f) = sync.take() {
            let _ = writeln!(f, "{}", serde_json::to_string(&r).unwrap_or_default());
        }
    };
    match monitor(args, &mut |pid| {
        report(
            &mut sync,
            Ready {
                pid: Some(pid),
                error: None,
            },
        )
    }) {
        Ok(()) => 0,
        Err(e) => {
            report(
                &mut sync,
                Ready {
                    pid: None,
                    error: Some(e.to_string()),
                },
            );
            1
        }
    }
}

fn monitor(args: &ShimArgs, ready: &mut dyn FnMut(i32)) -> Result<()> {
    // One malloc arena for the few threads: a monitor per container must stay small.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let _ = nix::unistd::setsid();
    nix::errno::Errno::result(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
        .step(|| "become child subreaper")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .step(|| "open /dev/null")?;
    let rt = Runtime::new(&args.root)?;
    let mut opts = CreateOptions::default();
    let mut sources: Vec<(usize, OwnedFd)> = Vec::new();
    let mut stdin_keep = None;
    let console_pair;
    if args.tty {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().step(|| "socketpair")?;
        opts.console = Some(theirs.as_raw_fd());
        console_pair = Some((ours, theirs));
    } else {
        console_pair = None;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        dup2(out_w.as_raw_fd(), 1)?;
        dup2(err_w.as_raw_fd(), 2)?;
        if args.stdin {
            let (in_r, in_w) = pipe()?;
            dup2(in_r.as_raw_fd(), 0)?;
            stdin_keep = Some(in_w);
        } else {
            dup2(null.as_raw_fd(), 0)?;
        }
        sources.push((0, out_r));
        sources.push((1, err_r));
    }
    let created = rt.create(&args.id, &args.bundle, &opts);
    // Our copies of the container's stdio go, so the pipes reach EOF when it exits.
    for fd in 0..3 {
        let _ = dup2(null.as_raw_fd(), fd);
    }
    let st = created?;
    let mut pty = None;
    if let Some((ours, theirs)) = console_pair {
        drop(theirs);
        let master = crate::console::recv_master(&ours)?;
        let dup = master.try_clone().step(|| "dup pty master")?;
        pty = Some(dup.as_raw_fd());
        stdin_keep = Some(dup);
        sources.push((0, master));
    }
    // Attach clients: they get the output as it comes and may write the container's stdin.
    let attach_path = args.exit_file.with_file_name("attach.sock");
    let _ = std::fs::remove_file(&attach_path);
    let (_dir, bind_path) = attach::socket_path(&attach_path).step(|| "attach socket path")?;
    let listener = std::os::unix::net::UnixListener::bind(&bind_path)
        .step(|| format!("listen on {}", attach_path.display()))?;
    let clients: Arc<Mutex<Vec<std::os::unix::net::UnixStream>>> = Arc::default();
    let stdin = Arc::new(Mutex::new(stdin_keep.map(std::fs::File::from)));
    // The log file exists before the container is reported created (and so started).
    let log = Arc::new(Mutex::new(logs::Writer::new(&args.log_path)));
    ready(st.pid);

    // SIGUSR1 asks for a log reopen (ReopenContainerLog); only the signal thread takes it.
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGUSR1);
    let _ = mask.thread_block();
    {
        let log = log.clone();
        let done = args.exit_file.with_file_name(REOPENED_FILE);
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            loop {
                if mask.wait().is_ok() {
                    log.lock().unwrap_or_else(|e| e.into_inner()).reopen();
                    // ReopenContainerLog waits for this count to move.
                    n += 1;
                    let _ = std::fs::write(&done, n.to_string());
                }
            }
        });
    }
    {
        let (clients, stdin) = (clients.clone(), stdin.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Ok(c) = conn.try_clone() {
                    clients.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
                let stdin = stdin.clone();
                std::thread::spawn(move || attach_input(conn, &stdin, pty));
            }
        });
    }
    let mut copiers = Vec::new();
    for (stream, fd) in sources {
        let log = log.clone();
        let clients = clients.clone();
        copiers.push(std::thread::spawn(move || {
            let mut f = std::fs::File::from(fd);
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .write(stream, &buf[..n]);
                        let mut cs = clients.lock().unwrap_or_else(|e| e.into_inner());
                        let frame_stream = if stream == 0 {
                            attach::STDOUT
                        } else {
                            attach::STDERR
                        };
                        cs.retain_mut(|c| attach::write_frame(c, frame_stream, &buf[..n]).is_ok());
                    }
                    // EIO: the pty's last slave closed.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }));
    }

    let code = wait_init(st.pid);
    stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    // Output still in the pipes is copied; a leftover process holding them does not block us.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for c in copiers {
        while !c.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    log.lock().unwrap_or_else(|e| e.into_inner()).flush();
    let reason = if oom_killed(&st.cgroup_path) {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let exit = Exit {
        exit_code: code,
        finished_at: now_ns(),
        reason: reason.into(),
    };
    let tmp = args.exit_file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&exit).expect("serializes"))
        .step(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.exit_file).step(|| format!("write {}", args.exit_file.display()))
}

/// Input from one attach client: stdin bytes, terminal resizes, stdin close.
fn attach_input(
    mut conn: std::os::unix::net::UnixStream,
    stdin: &Mutex<Option<std::fs::File>>,
    pty: Option<RawFd>,
) {
    while let Ok(Some((stream, data))) = attach::read_frame(&mut conn) {
        match stream {
            attach::STDIN => {
                let mut g = stdin.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(f) = g.as_mut() {
                    if f.write_all(&data).is_err() {
                        *g = None;
                    }
                }
            }
            attach::RESIZE => {
                if let (Some(fd), Some((w, h))) = (pty, attach::parse_resize(&data)) {
                    attach::resize(fd, w, h);
                }
            }
            // Closing stdin of a pipe ends the container's input (a pty stays open).
            attach::CLOSE if pty.is_none() => {
                stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
            _ => {}
        }
    }
}

/// Reap children (orphans re-parented to us too) until the container's init exits.
fn wait_init(pid: i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => return c,
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => return 128 + s as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 255,
        }
    }
}

/// Whether the kernel's OOM killer acted in the container's cgroup.
fn oom_killed(cgroup: &str) -> bool {
    let files = [
        format!("/sys/fs/cgroup{cgroup}/memory.events"),
        format!("/sys/fs/cgroup/memory{cgroup}/memory.oom_control"),
    ];
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}
