//! Port forwarding: over WebSocket one connection per requested port, over SPDY one
//! connection per data/error stream pair the client opens.

use super::super::spdy::{self, Event, Frame, Out};
use super::transport::{normal_close, ws_frame};
use super::Io;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

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

/// A pod-side connection to `port`, ready for tokio.
async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::task::spawn_blocking(move || connect_in(netns, port))
        .await
        .map_err(std::io::Error::other)??;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

fn connect_error(port: u16, e: std::io::Error) -> String {
    format!("failed to connect to localhost:{port} in the pod: {e}")
}

/// WebSocket: one pod connection per port of the request, for the socket's life.
pub async fn websocket(ws: WebSocketStream<Io>, netns: Option<PathBuf>, ports: Vec<u16>) {
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let w = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
        tx
    });
    let mut writers = HashMap::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let le = port.to_le_bytes();
        let _ = out_tx.send(ws_frame(data_ch, &le)).await;
        let _ = out_tx.send(ws_frame(err_ch, &le)).await;
        let stream = match connect(netns.clone(), *port).await {
            Ok(s) => s,
            Err(e) => {
                let msg = connect_error(*port, e);
                let _ = out_tx.send(ws_frame(err_ch, msg.as_bytes())).await;
                continue;
            }
        };
        let (mut r, wr) = stream.into_split();
        writers.insert(data_ch, wr);
        let out = out_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || out.send(ws_frame(data_ch, &buf[..n])).await.is_err() {
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
}

/// One forwarded connection's streams, as they arrive.
#[derive(Default)]
struct Pair {
    data: Option<u32>,
    error: Option<u32>,
    port: Option<u16>,
}

/// SPDY: the client opens an error and a data stream per local connection (paired by
/// the `requestID` header, aimed by `port`); each pair gets its own pod connection.
/// A failure is written to the error stream as text, which kubectl prints.
pub async fn spdy(
    mut events: mpsc::Receiver<Event>,
    out: mpsc::Sender<Out>,
    netns: Option<PathBuf>,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream → the task writing to its pod connection.
    let mut routes: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Stream { id, headers } => {
                let request = spdy::header(&headers, "requestid")
                    .unwrap_or("")
                    .to_string();
                let pair = pairs.entry(request.clone()).or_default();
                match spdy::header(&headers, "streamtype") {
                    Some("data") => pair.data = Some(id),
                    Some("error") => pair.error = Some(id),
                    _ => continue,
                }
                pair.port = pair
                    .port
                    .or_else(|| spdy::header(&headers, "port").and_then(|p| p.parse().ok()));
                let (Some(data), Some(error)) = (pair.data, pair.error) else {
                    continue;
                };
                let port = pair.port;
                pairs.remove(&request);
                let (tx, rx) = mpsc::channel(16);
                routes.insert(data, tx);
                tokio::spawn(forward(data, error, port, netns.clone(), out.clone(), rx));
            }
            Event::Data { id, data } => {
                if let Some(tx) = routes.get(&id) {
                    if tx.send(data).await.is_err() {
                        routes.remove(&id);
                    }
                }
            }
            // Dropping the route ends the pod connection's write side.
            Event::Fin { id } | Event::Reset { id } => {
                routes.remove(&id);
            }
            Event::Reply { .. } => {}
        }
    }
    drop(routes);
    let _ = out.send(Out::Close).await;
}

async fn forward(
    data: u32,
    error: u32,
    port: Option<u16>,
    netns: Option<PathBuf>,
    out: mpsc::Sender<Out>,
    mut from_client: mpsc::Receiver<Vec<u8>>,
) {
    let send = |id: u32, fin: bool, bytes: Vec<u8>| {
        let out = out.clone();
        async move {
            out.send(Out::Frame(Frame::Data {
                id,
                fin,
                data: bytes,
            }))
            .await
            .is_ok()
        }
    };
    let conn = match port {
        Some(p) => connect(netns, p).await.map_err(|e| connect_error(p, e)),
        None => Err("the port header is missing or not a port number".to_string()),
    };
    let stream = match conn {
        Ok(s) => s,
        Err(msg) => {
            send(error, false, msg.into_bytes()).await;
            send(error, true, Vec::new()).await;
            send(data, true, Vec::new()).await;
            return;
        }
    };
    let (mut r, mut w) = stream.into_split();
    tokio::spawn(async move {
        while let Some(d) = from_client.recv().await {
            if w.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || !send(data, false, buf[..n].to_vec()).await {
            break;
        }
    }
    send(data, true, Vec::new()).await;
    send(error, true, Vec::new()).await;
}
