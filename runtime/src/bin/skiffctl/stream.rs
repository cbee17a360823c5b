//! Client side of the CRI streaming URLs (exec, attach, port-forward): WebSocket with the
//! Kubernetes channel protocol, as `skiff_runtime::cri::streaming` serves it.

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Result<Ws> {
    let ws_url = url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io".parse()?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("connect to streaming URL {url}"))?;
    Ok(ws)
}

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = vec![ch];
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Puts the terminal in raw mode while alive.
struct Raw(Option<nix::sys::termios::Termios>);

impl Raw {
    fn enable(on: bool) -> Raw {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !on || !nix::unistd::isatty(&stdin).unwrap_or(false) {
            return Raw(None);
        }
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        }
        Raw(saved)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn term_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    (unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0)
        .then_some((ws.ws_col, ws.ws_row))
}

/// Exit code from the final status message (channel 3).
pub fn status_code(status: &[u8]) -> Result<i32> {
    let v: serde_json::Value = serde_json::from_slice(status)
        .map_err(|_| anyhow!("{}", String::from_utf8_lossy(status)))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if let Some(c) = v["details"]["causes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["reason"] == "ExitCode"))
    {
        return c["message"]
            .as_str()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| anyhow!("bad exit code in {v}"));
    }
    bail!("{}", v["message"].as_str().unwrap_or("stream failed"))
}

/// Run an exec or attach session: copy our stdin in, its output out; returns the exit code.
pub async fn session(url: &str, stdin: bool, tty: bool) -> Result<i32> {
    let ws = connect(url).await?;
    let (mut tx, mut rx) = ws.split();
    let _raw = Raw::enable(tty);
    if tty {
        if let Some((w, h)) = term_size() {
            let msg = serde_json::json!({"Width": w, "Height": h}).to_string();
            tx.send(frame(4, msg.as_bytes())).await?;
        }
    }
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    if stdin {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 16 * 1024];
            let mut inp = std::io::stdin().lock();
            loop {
                match inp.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = in_tx.blocking_send(None);
                        break;
                    }
                    Ok(n) => {
                        if in_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    let mut code = None;
    let mut stdin_open = stdin;
    loop {
        tokio::select! {
            m = rx.next() => {
                let Some(Ok(m)) = m else { break };
                match m {
                    Message::Binary(b) if !b.is_empty() => match b[0] {
                        1 => { let mut o = std::io::stdout(); o.write_all(&b[1..])?; o.flush()?; }
                        2 => { let mut e = std::io::stderr(); e.write_all(&b[1..])?; e.flush()?; }
                        3 => code = Some(status_code(&b[1..])),
                        _ => {}
                    },
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            d = in_rx.recv(), if stdin_open => {
                match d.flatten() {
                    Some(data) => tx.send(frame(0, &data)).await?,
                    None => {
                        stdin_open = false;
                        // v5: close the stdin channel (the process sees EOF).
                        tx.send(frame(255, &[0])).await?;
                    }
                }
            }
        }
    }
    code.unwrap_or(Ok(0))
}

/// Listen on 127.0.0.1:`local` and forward each connection to the pod's `remote` port,
/// with a new PortForward URL per connection.
pub async fn port_forward<F, Fut>(local: u16, remote: u16, mut new_url: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let l = tokio::net::TcpListener::bind(("127.0.0.1", local))
        .await
        .with_context(|| format!("listen on 127.0.0.1:{local}"))?;
    println!(
        "Forwarding from 127.0.0.1:{} -> {remote}",
        l.local_addr()?.port()
    );
    loop {
        let (conn, _) = l.accept().await?;
        let url = new_url().await?;
        tokio::spawn(async move {
            if let Err(e) = forward_one(conn, &url, remote).await {
                eprintln!("port-forward: {e:#}");
            }
        });
    }
}

async fn forward_one(conn: tokio::net::TcpStream, url: &str, remote: u16) -> Result<()> {
    let url = format!("{url}?port={remote}");
    let ws = connect(&url).await?;
    let (mut tx, mut rx) = ws.split();
    let (mut r, mut w) = conn.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || tx.send(frame(0, &buf[..n])).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    });
    // The first message on each channel is the port number; data follows on channel 0.
    let mut seen = [false; 2];
    while let Some(Ok(m)) = rx.next().await {
        match m {
            Message::Binary(b) if !b.is_empty() => {
                let ch = b[0] as usize;
                if ch < 2 && !seen[ch] {
                    seen[ch] = true;
                    continue;
                }
                match ch {
                    0 => w.write_all(&b[1..]).await?,
                    1 => bail!("{}", String::from_utf8_lossy(&b[1..])),
                    _ => {}
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    up.abort();
    Ok(())
}
