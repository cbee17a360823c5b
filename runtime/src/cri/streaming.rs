//! The CRI streaming server: Exec, Attach and PortForward return a one-time URL here,
//! and the client (kubelet, skiffctl) connects with WebSocket, speaking Kubernetes'
//! channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`): each binary message is
//! one channel byte then data. Exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 status
//! (a metav1.Status JSON at the end), 4 resize; v5 adds 255 + channel to close one.
//! Port forward: for the i-th port, channel 2i carries data and 2i+1 errors; both open
//! with the port number (u16 little endian). SPDY is not served.

use super::attach;
use super::Inner;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// How long a URL handed out by Exec/Attach/PortForward stays valid (as the kubelet's).
const TOKEN_TTL: Duration = Duration::from_secs(60);
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];

#[derive(Debug, Clone)]
pub enum Session {
    Exec {
        container: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    },
    Attach {
        container: String,
        dir: PathBuf,
        tty: bool,
        stdin: bool,
    },
    PortForward {
        /// None: the node's network (hostNetwork pods).
        netns: Option<PathBuf>,
        ports: Vec<u16>,
    },
}

pub struct Streaming {
    pub addr: SocketAddr,
    tokens: Mutex<HashMap<String, (Session, Instant)>>,
}

impl Streaming {
    /// Bind the server (loopback by default) and serve in the background.
    pub async fn start(addr: SocketAddr, inner: Arc<Inner>) -> std::io::Result<Arc<Streaming>> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let s = Arc::new(Streaming {
            addr: listener.local_addr()?,
            tokens: Mutex::new(HashMap::new()),
        });
        let srv = s.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (srv, inner) = (srv.clone(), inner.clone());
                tokio::spawn(async move { srv.handle(conn, inner).await });
            }
        });
        Ok(s)
    }

    /// A one-time URL for `session`.
    pub fn url(&self, session: Session) -> String {
        let kind = match &session {
            Session::Exec { .. } => "exec",
            Session::Attach { .. } => "attach",
            Session::PortForward { .. } => "portforward",
        };
        let token = super::records::new_id()[..32].to_string();
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        t.insert(token.clone(), (session, Instant::now()));
        format!("http://{}/{kind}/{token}", self.addr)
    }

    fn take(&self, token: &str) -> Option<Session> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(token)
            .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
            .map(|(s, _)| s)
    }

    // The handshake callback's error type is tungstenite's (an HTTP response).
    #[allow(clippy::result_large_err)]
    async fn handle(&self, conn: tokio::net::TcpStream, inner: Arc<Inner>) {
        let mut session = None;
        let mut version = 4;
        let mut ports_query = Vec::new();
        let cb = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let path = req.uri().path();
            let token = path.rsplit('/').next().unwrap_or("");
            let Some(s) = self.take(token) else {
                return Err(http_error(404, "unknown or expired streaming URL"));
            };
            for q in req.uri().query().unwrap_or("").split('&') {
                if let Some(p) = q.strip_prefix("port=") {
                    ports_query.extend(p.split(',').filter_map(|x| x.parse::<u16>().ok()));
                }
            }
            let offered = req
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
            if let Some(p) = PROTOCOLS.iter().find(|p| offered.contains(p)) {
                version = if *p == "v5.channel.k8s.io" { 5 } else { 4 };
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", p.parse().expect("header value"));
            }
            session = Some(s);
            Ok(resp)
        };
        let Ok(ws) = tokio_tungstenite::accept_hdr_async(conn, cb).await else {
            return;
        };
        let Some(session) = session else { return };
        let (tx, rx) = ws.split();
        let _ = match session {
            Session::Exec {
                container,
                cmd,
                tty,
                stdin,
            } => exec(inner, tx, rx, version, &container, cmd, tty, stdin).await,
            Session::Attach {
                dir, tty, stdin, ..
            } => attach_session(tx, rx, version, dir, tty, stdin).await,
            Session::PortForward { netns, ports } => {
                let ports = if ports_query.is_empty() {
                    ports
                } else {
                    ports_query
                };
                port_forward(tx, rx, netns, ports).await
            }
        };
    }
}

#[allow(clippy::result_large_err)]
fn http_error(code: u16, msg: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(msg.to_string()));
    *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(code)
        .unwrap_or(tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST);
    r
}

type Tx = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Message,
>;
type Rx =
    futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>;

/// A close with status 1000: kubectl reports a close without a status as an error.
fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

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

/// Send everything that arrives on `out` to the client, in order.
fn writer(mut tx: Tx, mut out: mpsc::Receiver<Message>) -> tokio::task::JoinHandle<Tx> {
    tokio::spawn(async move {
        while let Some(m) = out.recv().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
        tx
    })
}

#[allow(clippy::too_many_arguments)]
async fn exec(
    inner: Arc<Inner>,
    tx: Tx,
    mut rx: Rx,
    _version: u8,
    container: &str,
    cmd: Vec<String>,
    tty: bool,
    want_stdin: bool,
) -> std::io::Result<()> {
    use std::process::Stdio;
    let (out_tx, out_rx) = mpsc::channel::<Message>(64);
    let w = writer(tx, out_rx);
    let fail = |e: String| {
        let out_tx = out_tx.clone();
        async move {
            let st = serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"});
            let _ = out_tx.send(frame(3, st.to_string().as_bytes())).await;
        }
    };
    // tty: the exec'd process's pty master comes to us over a console socket.
    let console = if tty {
        // A short path (unix socket paths are limited), used once and removed.
        let p = std::env::temp_dir().join(format!(
            "skiff-console-{}.sock",
            &super::records::new_id()[..16]
        ));
        match std::os::unix::net::UnixListener::bind(&p) {
            Ok(l) => Some((p, l)),
            Err(e) => {
                fail(format!("console socket: {e}")).await;
                drop(out_tx);
                let _ = w.await;
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
            drop(out_tx);
            let _ = w.await;
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
                if n == 0 || out.blocking_send(frame(1, &buf[..n])).is_err() {
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
                1u8,
                Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            )
        }),
        child.stderr.take().map(|s| {
            (
                2u8,
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
                if n == 0 || out.send(frame(ch, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }));
    }
    // Client input until the process ends.
    let input = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            let Message::Binary(b) = m else {
                if matches!(m, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match (b.first().copied(), &b[1..]) {
                (Some(attach::STDIN), data) => {
                    if let Some(w) = stdin_w.as_mut() {
                        if w.write_all(data).await.is_err() {
                            stdin_w = None;
                        }
                    }
                }
                (Some(attach::RESIZE), data) => {
                    if let (Some(fd), Some((c, r))) = (pty_fd, attach::parse_resize(data)) {
                        attach::resize(fd, c, r);
                    }
                }
                (Some(attach::CLOSE), [attach::STDIN]) => stdin_w = None,
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
        .send(frame(3, exit_status(code).to_string().as_bytes()))
        .await;
    drop(out_tx);
    if let Ok(mut tx) = w.await {
        let _ = tx.send(normal_close()).await;
    }
    Ok(())
}

async fn attach_session(
    tx: Tx,
    mut rx: Rx,
    _version: u8,
    dir: PathBuf,
    _tty: bool,
    want_stdin: bool,
) -> std::io::Result<()> {
    let (out_tx, out_rx) = mpsc::channel::<Message>(64);
    let w = writer(tx, out_rx);
    let sock = dir.join("attach.sock");
    let (_dir, short) = attach::socket_path(&sock)?;
    let conn = match tokio::net::UnixStream::connect(&short).await {
        Ok(c) => c,
        Err(e) => {
            let st = serde_json::json!({"metadata": {}, "status": "Failure", "message": format!("attach: the container's monitor is gone ({e})"), "reason": "InternalError"});
            let _ = out_tx.send(frame(3, st.to_string().as_bytes())).await;
            drop(out_tx);
            let _ = w.await;
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
            if out.send(frame(head[0], &data)).await.is_err() {
                break;
            }
        }
    });
    let input = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if !b.is_empty() => {
                    let ch = b[0];
                    if ch == attach::STDIN && !want_stdin {
                        continue;
                    }
                    let data = if ch == attach::CLOSE {
                        &b[..0]
                    } else {
                        &b[1..]
                    };
                    let mut buf = Vec::new();
                    let _ = attach::write_frame(&mut buf, ch, data);
                    if wr.write_all(&buf).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    // Attach ends when the container's output ends (it exited) or the client leaves.
    tokio::select! {
        _ = pump => {}
        _ = input => {}
    }
    let _ = out_tx
        .send(frame(3, exit_status(0).to_string().as_bytes()))
        .await;
    drop(out_tx);
    if let Ok(mut tx) = w.await {
        let _ = tx.send(normal_close()).await;
    }
    Ok(())
}

/// Connect to 127.0.0.1:port inside a network namespace (from a thread that enters it).
fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<std::net::TcpStream> {
    let Some(ns) = netns else {
        return std::net::TcpStream::connect(("127.0.0.1", port));
    };
    let f = std::fs::File::open(&ns)?;
    std::thread::spawn(move || {
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        std::net::TcpStream::connect(("127.0.0.1", port))
    })
    .join()
    .map_err(|_| std::io::Error::other("connect thread panicked"))?
}

async fn port_forward(
    tx: Tx,
    mut rx: Rx,
    netns: Option<PathBuf>,
    ports: Vec<u16>,
) -> std::io::Result<()> {
    let (out_tx, out_rx) = mpsc::channel::<Message>(64);
    let w = writer(tx, out_rx);
    let mut writers = HashMap::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let le = port.to_le_bytes();
        let _ = out_tx.send(frame(data_ch, &le)).await;
        let _ = out_tx.send(frame(err_ch, &le)).await;
        let ns = netns.clone();
        let p = *port;
        let conn = tokio::task::spawn_blocking(move || connect_in(ns, p))
            .await
            .map_err(std::io::Error::other)?;
        let stream = match conn.and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("failed to connect to localhost:{port} in the pod: {e}");
                let _ = out_tx.send(frame(err_ch, msg.as_bytes())).await;
                continue;
            }
        };
        let (mut r, wr) = stream.into_split();
        writers.insert(data_ch, wr);
        let out = out_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || out.send(frame(data_ch, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(out_tx);
    // When every pod-side connection has ended (or was aborted below), close the socket.
    let closer = tokio::spawn(async move {
        if let Ok(mut tx) = w.await {
            let _ = tx.send(normal_close()).await;
        }
    });
    while let Some(Ok(m)) = rx.next().await {
        match m {
            Message::Binary(b) if !b.is_empty() => {
                if let Some(wr) = writers.get_mut(&b[0]) {
                    if wr.write_all(&b[1..]).await.is_err() {
                        writers.remove(&b[0]);
                    }
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    drop(writers);
    for r in readers {
        r.abort();
    }
    let _ = closer.await;
    Ok(())
}
