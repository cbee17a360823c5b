//! The CRI streaming server: Exec, Attach and PortForward return a one-time URL here,
//! and the client (kubelet, kubectl through the API server, crictl, skiffctl) upgrades
//! the connection to one of Kubernetes' two stream transports:
//!
//! - WebSocket with the channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`):
//!   each binary message is one channel byte then data. Exec/attach: 0 stdin,
//!   1 stdout, 2 stderr, 3 status (a metav1.Status JSON at the end), 4 resize; v5 adds
//!   255 + channel to close one. Port forward: for the i-th port, channel 2i carries
//!   data and 2i+1 errors; both open with the port number (u16 little endian).
//! - SPDY/3.1 (`X-Stream-Protocol-Version: v4.channel.k8s.io` … or
//!   `portforward.k8s.io`): the client opens one stream per channel, named by its
//!   `streamType` header; port forward opens a data and an error stream per
//!   connection, paired by `requestID`. kubectl 1.31+ port-forward sends the same
//!   SPDY bytes inside WebSocket messages (`SPDY/3.1+portforward.k8s.io`).
//!
//! Sessions (`exec.rs`, `portforward.rs`) see channels only; `transport.rs` maps them.

mod exec;
mod portforward;
mod transport;

use super::Inner;
pub use exec::exit_status;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a URL handed out by Exec/Attach/PortForward stays valid (as the kubelet's).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// WebSocket subprotocols, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
/// SPDY stream protocol versions for exec and attach, best first (v1 is not served).
const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
const SPDY_PORT_FORWARD: &str = "portforward.k8s.io";
/// kubectl 1.31+ port-forward: SPDY frames carried in WebSocket binary messages.
const TUNNELED_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// The connection after the HTTP upgrade (a request head may have been buffered).
type Io = BufReader<TcpStream>;

#[derive(Debug, Clone)]
pub enum Session {
    Exec {
        container: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Attach {
        container: String,
        dir: PathBuf,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
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

/// A request head as the upgrade needs it.
struct Head {
    path: String,
    query: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, whether repeated or comma separated.
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }
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

    async fn handle(&self, conn: TcpStream, inner: Arc<Inner>) {
        let mut io = BufReader::new(conn);
        let Ok(Some(head)) = read_head(&mut io).await else {
            return;
        };
        let token = head.path.rsplit('/').next().unwrap_or("");
        let Some(session) = self.take(token) else {
            return respond(&mut io, "404 Not Found", "unknown or expired streaming URL").await;
        };
        let upgrade = head.get("upgrade").unwrap_or("").to_ascii_lowercase();
        if upgrade == "websocket" {
            websocket(io, &head, session, inner).await
        } else if upgrade.starts_with("spdy/3") {
            spdy(io, &head, session, inner).await
        } else {
            respond(
                &mut io,
                "400 Bad Request",
                "streaming needs an upgrade to websocket or SPDY/3.1",
            )
            .await
        }
    }
}

async fn websocket(mut io: Io, head: &Head, session: Session, inner: Arc<Inner>) {
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};
    let Some(key) = head.get("sec-websocket-key") else {
        return respond(&mut io, "400 Bad Request", "no Sec-WebSocket-Key").await;
    };
    let offered = head.values("sec-websocket-protocol");
    let tunnel =
        matches!(session, Session::PortForward { .. }) && offered.contains(&TUNNELED_PORT_FORWARD);
    let chosen = match tunnel {
        true => Some(&TUNNELED_PORT_FORWARD),
        false => PROTOCOLS.iter().find(|p| offered.contains(p)),
    };
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(p) = chosen {
        resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    resp.push_str("\r\n");
    if io.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    match session {
        Session::PortForward { netns, .. } if tunnel => {
            let (events, out) = super::spdy::serve(transport::tunnel(ws));
            portforward::spdy(events, out, netns).await
        }
        Session::PortForward { netns, ports } => {
            let from_query: Vec<u16> = query_values(&head.query, "port")
                .flat_map(|p| {
                    p.split(',')
                        .filter_map(|x| x.parse().ok())
                        .collect::<Vec<_>>()
                })
                .collect();
            let ports = if from_query.is_empty() {
                ports
            } else {
                from_query
            };
            portforward::websocket(ws, netns, ports).await
        }
        s => {
            let (out, input, done) = transport::websocket(ws);
            run(s, inner, out, input).await;
            let _ = done.await;
        }
    }
}

async fn spdy(mut io: Io, head: &Head, session: Session, inner: Arc<Inner>) {
    let offered = head.values("x-stream-protocol-version");
    let supported: &[&str] = match session {
        Session::PortForward { .. } => &[SPDY_PORT_FORWARD],
        _ => SPDY_PROTOCOLS,
    };
    let Some(chosen) = supported.iter().find(|p| offered.contains(p)) else {
        let msg = format!(
            "unable to upgrade: no common stream protocol (offered {offered:?}, served {supported:?})"
        );
        return respond(&mut io, "403 Forbidden", &msg).await;
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {chosen}\r\n\r\n"
    );
    if io.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let (events, out) = super::spdy::serve(io);
    match session {
        Session::PortForward { netns, .. } => portforward::spdy(events, out, netns).await,
        s => {
            let version = chosen.as_bytes()[1] - b'0';
            let (tty, stdin, stdout, stderr) = match &s {
                Session::Exec {
                    tty,
                    stdin,
                    stdout,
                    stderr,
                    ..
                }
                | Session::Attach {
                    tty,
                    stdin,
                    stdout,
                    stderr,
                    ..
                } => (*tty, *stdin, *stdout, *stderr),
                Session::PortForward { .. } => unreachable!("handled above"),
            };
            let want = transport::Want {
                stdin,
                stdout,
                stderr: stderr && !tty,
                resize: tty && version >= 3,
            };
            match transport::spdy(events, out.clone(), want, version).await {
                Ok((o, input, done)) => {
                    run(s, inner, o, input).await;
                    let _ = done.await;
                }
                Err(_) => {
                    let _ = out.send(super::spdy::Out::Close).await;
                }
            }
        }
    }
}

async fn run(session: Session, inner: Arc<Inner>, out: transport::Output, input: transport::Input) {
    let _ = match session {
        Session::Exec {
            container,
            cmd,
            tty,
            stdin,
            ..
        } => exec::exec(inner, out, input, &container, cmd, tty, stdin).await,
        Session::Attach { dir, stdin, .. } => exec::attach(out, input, dir, stdin).await,
        Session::PortForward { .. } => Ok(()),
    };
}

fn query_values<'a>(query: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query
        .split('&')
        .filter_map(move |kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Read an HTTP/1.1 request head (at most 64 KiB).
async fn read_head(io: &mut Io) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target
        .split_once('?')
        .map(|(p, q)| (p.to_string(), q.to_string()))
        .unwrap_or((target, String::new()));
    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        line.clear();
        let n = io.read_line(&mut line).await?;
        total += n;
        if n == 0 || total > 64 * 1024 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Ok(Some(Head {
        path,
        query,
        headers,
    }))
}

async fn respond(io: &mut Io, status: &str, msg: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
        msg.len()
    );
    let _ = io.write_all(resp.as_bytes()).await;
    let _ = io.shutdown().await;
}
