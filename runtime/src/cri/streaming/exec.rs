//! Exec and attach sessions over channels (see `transport.rs`).

use super::transport::{In, Input, Output, RESIZE, STATUS, STDERR, STDIN, STDOUT};
use crate::cri::{attach, Inner};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The final status message of an exec, as the API server's remotecommand sends it.
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        serde_json::json!({"metadata": {}, "status": "Success"})
    } else {
        serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        })
    }
}

pub async fn exec(
    inner: Arc<Inner>,
    out_tx: Output,
    mut rx: Input,
    container: &str,
    cmd: Vec<String>,
    tty: bool,
    want_stdin: bool,
) -> std::io::Result<()> {
    use std::process::Stdio;
    let fail = |e: String| {
        let out_tx = out_tx.clone();
        async move {
            let st = serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"});
            let _ = out_tx.send((STATUS, st.to_string().into_bytes())).await;
        }
    };
    // tty: the exec'd process's pty master comes to us over a console socket.
    let console = if tty {
        // A short path (unix socket paths are limited), used once and removed.
        let p = std::env::temp_dir().join(format!(
            "skiff-console-{}.sock",
            &crate::cri::records::new_id()[..16]
        ));
        match std::os::unix::net::UnixListener::bind(&p) {
            Ok(l) => Some((p, l)),
            Err(e) => {
                fail(format!("console socket: {e}")).await;
                return Ok(());
            }
        }
    } else {
        None
    };
    let extra: Vec<String> = match &console {
        Some((p, _)) => vec![
            "-t".into(),
            "--console-socket".into(),
            p.display().to_string(),
        ],
        None => Vec::new(),
    };
    let command = match inner.exec_command(container, &cmd, None, &extra) {
        Ok((_, c)) => c,
        Err(e) => {
            fail(e.message().to_string()).await;
            return Ok(());
        }
    };
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(if want_stdin && !tty {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if tty { Stdio::null() } else { Stdio::piped() })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    // Input side: a pipe, or the pty master.
    let mut stdin_w: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> = None;
    let mut pty_fd = None;
    let mut pumps = Vec::new();
    if let Some((path, listener)) = console {
        let master = tokio::task::spawn_blocking(move || {
            listener.set_nonblocking(false)?;
            let (conn, _) = listener.accept()?;
            let _ = std::fs::remove_file(&path);
            crate::console::recv_master(&conn).map_err(|e| std::io::Error::other(e.to_string()))
        })
        .await
        .map_err(std::io::Error::other)??;
        pty_fd = Some(std::os::fd::AsRawFd::as_raw_fd(&master));
        let reader = master.try_clone()?;
        let writer_file = tokio::fs::File::from_std(std::fs::File::from(master));
        stdin_w = Some(Box::new(writer_file));
        let out = out_tx.clone();
        pumps.push(tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::from(reader);
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 || out.blocking_send((STDOUT, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }));
    } else if let Some(s) = child.stdin.take() {
        stdin_w = Some(Box::new(s));
    }
    let pipes: Vec<(u8, Box<dyn tokio::io::AsyncRead + Unpin + Send>)> = [
        child.stdout.take().map(|s| {
            (
                STDOUT,
                Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            )
        }),
        child.stderr.take().map(|s| {
            (
                STDERR,
                Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut async_pumps = Vec::new();
    for (ch, mut r) in pipes {
        let out = out_tx.clone();
        async_pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || out.send((ch, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }));
    }
    // Client input until the process ends.
    let input = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            match m {
                In::Data(STDIN, data) => {
                    if let Some(w) = stdin_w.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            stdin_w = None;
                        }
                    }
                }
                In::Data(RESIZE, data) => {
                    if let (Some(fd), Some((c, r))) = (pty_fd, attach::parse_resize(&data)) {
                        attach::resize(fd, c, r);
                    }
                }
                In::Close(STDIN) => stdin_w = None,
                _ => {}
            }
        }
    });
    let status = child.wait().await?;
    for p in async_pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    input.abort();
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let code = status.code().unwrap_or(255);
    let _ = out_tx
        .send((STATUS, exit_status(code).to_string().into_bytes()))
        .await;
    Ok(())
}

/// Attach to the container's monitor, whose socket speaks the same channel numbers.
pub async fn attach(
    out_tx: Output,
    mut rx: Input,
    dir: PathBuf,
    want_stdin: bool,
) -> std::io::Result<()> {
    let sock = dir.join("attach.sock");
    let (_dir, short) = attach::socket_path(&sock)?;
    let conn = match tokio::net::UnixStream::connect(&short).await {
        Ok(c) => c,
        Err(e) => {
            let st = serde_json::json!({"metadata": {}, "status": "Failure", "message": format!("attach: the container's monitor is gone ({e})"), "reason": "InternalError"});
            let _ = out_tx.send((STATUS, st.to_string().into_bytes())).await;
            return Ok(());
        }
    };
    let (mut r, mut wr) = conn.into_split();
    let out = out_tx.clone();
    let pump = tokio::spawn(async move {
        loop {
            let mut head = [0u8; 5];
            if r.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut data = vec![0u8; len];
            if r.read_exact(&mut data).await.is_err() {
                break;
            }
            if out.send((head[0], data)).await.is_err() {
                break;
            }
        }
    });
    let input = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let mut buf = Vec::new();
            let _ = match m {
                In::Data(STDIN, _) if !want_stdin => continue,
                In::Data(ch, data) => attach::write_frame(&mut buf, ch, &data),
                // The monitor's frame for "stdin is closed".
                In::Close(STDIN) => attach::write_frame(&mut buf, attach::CLOSE, b""),
                In::Close(_) => continue,
            };
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    // Attach ends when the container's output ends (it exited) or the client leaves.
    tokio::select! {
        _ = pump => {}
        _ = input => {}
    }
    let _ = out_tx
        .send((STATUS, exit_status(0).to_string().into_bytes()))
        .await;
    Ok(())
}
