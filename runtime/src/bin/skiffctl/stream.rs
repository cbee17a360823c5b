//! Client side of the CRI streaming URLs (exec, attach, port-forward), over either of
//! the transports `skiff_runtime::cri::streaming` serves: WebSocket with the Kubernetes
//! channel protocol, or SPDY/3.1 with one stream per channel (crictl's default).

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use skiff_runtime::cri::spdy::{self, Event, Frame, Out};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    Spdy,
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str) -> Result<Ws> {
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

/// Upgrade an http:// streaming URL to SPDY/3.1 with `protocol`.
async fn spdy_connect(
    url: &str,
    protocol: &str,
) -> Result<(mpsc::Receiver<Event>, mpsc::Sender<Out>)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("SPDY streaming needs an http:// URL, got {url}"))?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let tcp = tokio::net::TcpStream::connect(hostport)
        .await
        .with_context(|| format!("connect to streaming URL {url}"))?;
    let mut io = tokio::io::BufReader::new(tcp);
    let req = format!(
        "GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await?;
    let mut status = String::new();
    io.read_line(&mut status).await?;
    let mut chosen = None;
    loop {
        let mut l = String::new();
        if io.read_line(&mut l).await? == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("x-stream-protocol-version") {
                chosen = Some(v.trim().to_string());
            }
        }
    }
    if status.split_whitespace().nth(1) != Some("101") {
        let mut body = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), io.read_to_string(&mut body)).await;
        bail!(
            "streaming upgrade refused: {} {}",
            status.trim(),
            body.trim()
        );
    }
    if chosen.as_deref() != Some(protocol) {
        bail!("streaming server chose protocol {chosen:?}, not {protocol}");
    }
    Ok(spdy::open(io))
}

/// What a session sends.
enum Send {
    Data(u8, Vec<u8>),
    /// No more on this channel (stdin EOF).
    Close(u8),
}

/// A session as channels: send with `tx`, receive (channel, data) until `rx` ends.
struct Channels {
    tx: mpsc::Sender<Send>,
    rx: mpsc::Receiver<(u8, Vec<u8>)>,
}

/// Open an exec/attach session on `channels` (SPDY opens one stream for each).
async fn open(url: &str, transport: Transport, channels: &[u8]) -> Result<Channels> {
    let (tx, mut send_rx) = mpsc::channel::<Send>(16);
    let (recv_tx, rx) = mpsc::channel(64);
    match transport {
        Transport::Websocket => {
            let (mut wtx, mut wrx) = ws_connect(url).await?.split();
            tokio::spawn(async move {
                while let Some(s) = send_rx.recv().await {
                    // v5 closes a channel with [255, ch].
                    let m = match s {
                        Send::Data(ch, d) => frame(ch, &d),
                        Send::Close(ch) => frame(255, &[ch]),
                    };
                    if wtx.send(m).await.is_err() {
                        return;
                    }
                }
                let _ = wtx.send(Message::Close(None)).await;
            });
            tokio::spawn(async move {
                while let Some(Ok(m)) = wrx.next().await {
                    let sent = match m {
                        Message::Binary(b) if !b.is_empty() => {
                            recv_tx.send((b[0], b[1..].to_vec())).await.is_ok()
                        }
                        Message::Close(_) => false,
                        _ => true,
                    };
                    if !sent {
                        return;
                    }
                }
            });
        }
        Transport::Spdy => {
            let (mut events, out) = spdy_connect(url, "v4.channel.k8s.io").await?;
            let mut ids = HashMap::new();
            for (i, ch) in channels.iter().enumerate() {
                let id = 1 + 2 * i as u32;
                let name = ["stdin", "stdout", "stderr", "error", "resize"][*ch as usize];
                let headers = vec![("streamtype".to_string(), name.to_string())];
                out.send(Out::Frame(Frame::SynStream {
                    id,
                    fin: false,
                    headers,
                }))
                .await?;
                ids.insert(*ch, id);
            }
            // Data goes out only on accepted streams.
            let mut pending: Vec<u32> = ids.values().copied().collect();
            let mut early = Vec::new();
            while !pending.is_empty() {
                match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                    Ok(Some(Event::Reply { id })) => pending.retain(|p| *p != id),
                    Ok(Some(Event::Reset { id })) => bail!("the server refused stream {id}"),
                    Ok(Some(ev)) => early.push(ev),
                    Ok(None) => bail!("the streaming server closed the connection"),
                    Err(_) => bail!("timed out waiting for the streaming server"),
                }
            }
            let chan: HashMap<u32, u8> = ids.iter().map(|(c, i)| (*i, *c)).collect();
            // The session ends when the server has finished every stream it writes.
            let mut open_from_server: Vec<u32> = [STDOUT, STDERR, STATUS]
                .iter()
                .filter_map(|c| ids.get(c).copied())
                .collect();
            let mut events = spdy::Replay::new(early, events);
            tokio::spawn(async move {
                while let Some(ev) = events.next().await {
                    match ev {
                        Event::Data { id, data } => {
                            if let Some(ch) = chan.get(&id) {
                                if recv_tx.send((*ch, data)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Event::Fin { id } | Event::Reset { id } => {
                            open_from_server.retain(|i| *i != id);
                            if open_from_server.is_empty() {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(s) = send_rx.recv().await {
                    let (ch, fin, data) = match s {
                        Send::Data(ch, d) => (ch, false, d),
                        Send::Close(ch) => (ch, true, Vec::new()),
                    };
                    let Some(&id) = ids.get(&ch) else { continue };
                    if out
                        .send(Out::Frame(Frame::Data { id, fin, data }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = out.send(Out::Close).await;
            });
        }
    }
    Ok(Channels { tx, rx })
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
pub async fn session(url: &str, transport: Transport, stdin: bool, tty: bool) -> Result<i32> {
    let mut channels = vec![STATUS, STDOUT];
    channels.push(if tty { RESIZE } else { STDERR });
    if stdin {
        channels.push(STDIN);
    }
    let Channels { tx, mut rx } = open(url, transport, &channels).await?;
    let _raw = Raw::enable(tty);
    if tty {
        if let Some((w, h)) = term_size() {
            // One JSON document per line, as kubectl writes them.
            let msg = serde_json::json!({"Width": w, "Height": h}).to_string() + "\n";
            tx.send(Send::Data(RESIZE, msg.into_bytes())).await?;
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
    let mut status = Vec::new();
    let mut stdin_open = stdin;
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some((ch, data)) = m else { break };
                match ch {
                    STDOUT => { let mut o = std::io::stdout(); o.write_all(&data)?; o.flush()?; }
                    STDERR => { let mut e = std::io::stderr(); e.write_all(&data)?; e.flush()?; }
                    // Over SPDY the status may come in pieces.
                    STATUS => { status.extend_from_slice(&data); code = Some(()); }
                    _ => {}
                }
            }
            d = in_rx.recv(), if stdin_open => {
                match d.flatten() {
                    Some(data) => tx.send(Send::Data(STDIN, data)).await?,
                    None => {
                        stdin_open = false;
                        tx.send(Send::Close(STDIN)).await?;
                    }
                }
            }
        }
    }
    drop(tx);
    match code {
        Some(()) => status_code(&status),
        None => Ok(0),
    }
}

/// Listen on 127.0.0.1:`local` and forward each connection to the pod's `remote` port,
/// with a new PortForward URL per connection.
pub async fn port_forward<F, Fut>(
    local: u16,
    remote: u16,
    transport: Transport,
    mut new_url: F,
) -> Result<()>
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
            let r = match transport {
                Transport::Websocket => forward_ws(conn, &url, remote).await,
                Transport::Spdy => forward_spdy(conn, &url, remote).await,
            };
            if let Err(e) = r {
                eprintln!("port-forward: {e:#}");
            }
        });
    }
}

async fn forward_ws(conn: tokio::net::TcpStream, url: &str, remote: u16) -> Result<()> {
    let url = format!("{url}?port={remote}");
    let ws = ws_connect(&url).await?;
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

/// SPDY: an error and a data stream for this connection, as kubectl opens them.
async fn forward_spdy(conn: tokio::net::TcpStream, url: &str, remote: u16) -> Result<()> {
    let (mut events, out) = spdy_connect(url, "portforward.k8s.io").await?;
    let (error, data) = (1u32, 3u32);
    for (id, kind) in [(error, "error"), (data, "data")] {
        let headers = vec![
            ("streamtype".to_string(), kind.to_string()),
            ("port".to_string(), remote.to_string()),
            ("requestid".to_string(), "0".to_string()),
        ];
        out.send(Out::Frame(Frame::SynStream {
            id,
            fin: false,
            headers,
        }))
        .await?;
    }
    let (mut r, mut w) = conn.into_split();
    let up_out = out.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            let fin = n == 0;
            let f = Frame::Data {
                id: data,
                fin,
                data: buf[..n].to_vec(),
            };
            if up_out.send(Out::Frame(f)).await.is_err() || fin {
                break;
            }
        }
    });
    let mut err = Vec::new();
    let mut finished = 0;
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Data { id, data: d } if id == data => w.write_all(&d).await?,
            Event::Data { id, data: d } if id == error => err.extend(d),
            Event::Fin { id } | Event::Reset { id } if id == data || id == error => {
                if id == data {
                    let _ = w.shutdown().await;
                }
                finished += 1;
                if finished == 2 {
                    break;
                }
            }
            _ => {}
        }
    }
    up.abort();
    let _ = out.send(Out::Close).await;
    if !err.is_empty() {
        bail!("{}", String::from_utf8_lossy(&err));
    }
    Ok(())
}
