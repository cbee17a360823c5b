//! Exec and attach sessions read and write numbered channels (0 stdin, 1 stdout,
//! 2 stderr, 3 status, 4 resize); these adapters carry them over WebSocket messages
//! or SPDY streams.

use super::super::spdy::{self, Event, Frame, Out};
use super::Io;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
/// WebSocket v5: a message `[255, ch]` closes channel ch.
const WS_CLOSE: u8 = 255;
/// How long a SPDY client gets to open the streams it asked for (the kubelet's).
const STREAM_CREATION: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum In {
    Data(u8, Vec<u8>),
    /// The client closed a channel (stdin EOF).
    Close(u8),
}

/// Channel and data to send; dropping every sender ends the session's output.
pub type Output = mpsc::Sender<(u8, Vec<u8>)>;
/// What the client sends; None when it has gone.
pub type Input = mpsc::Receiver<In>;

/// A close with status 1000: kubectl reports a close without a status as an error.
pub fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

pub fn ws_frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Channels over WebSocket messages. The handle finishes after the closing message.
pub fn websocket(ws: WebSocketStream<Io>) -> (Output, Input, JoinHandle<()>) {
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let (in_tx, in_rx) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            let ev = match m {
                Message::Binary(b) if b.len() == 2 && b[0] == WS_CLOSE => In::Close(b[1]),
                Message::Binary(b) if !b.is_empty() => In::Data(b[0], b[1..].to_vec()),
                Message::Close(_) => break,
                _ => continue,
            };
            if in_tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some((ch, data)) = out_rx.recv().await {
            if tx.send(ws_frame(ch, &data)).await.is_err() {
                break;
            }
        }
        let _ = tx.send(normal_close()).await;
        // The client answers the close; give it a moment, then let go.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    });
    (out_tx, in_rx, writer)
}

/// The byte stream inside WebSocket binary messages (SPDY tunnelled over WebSocket).
pub fn tunnel(ws: WebSocketStream<Io>) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut r, mut w) = tokio::io::split(ours);
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if w.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = w.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || tx.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        let _ = tx.send(normal_close()).await;
    });
    theirs
}

/// Which streams a SPDY client must open before the session starts.
pub struct Want {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub resize: bool,
}

fn channel_of(stream_type: &str) -> Option<u8> {
    Some(match stream_type {
        "stdin" => STDIN,
        "stdout" => STDOUT,
        "stderr" => STDERR,
        "error" => STATUS,
        "resize" => RESIZE,
        _ => return None,
    })
}

/// Channels over SPDY streams: wait for the streams `want` names (and the error
/// stream), then carry data both ways. Protocol versions before 4 get the error
/// message as text, and nothing on success, instead of a Status.
pub async fn spdy(
    mut events: mpsc::Receiver<Event>,
    out: mpsc::Sender<Out>,
    want: Want,
    version: u8,
) -> std::io::Result<(Output, Input, JoinHandle<()>)> {
    let mut needed = vec![STATUS];
    for (on, ch) in [
        (want.stdin, STDIN),
        (want.stdout, STDOUT),
        (want.stderr, STDERR),
        (want.resize, RESIZE),
    ] {
        if on {
            needed.push(ch);
        }
    }
    let mut stream_of: HashMap<u8, u32> = HashMap::new();
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION;
    while !needed.iter().all(|c| stream_of.contains_key(c)) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Stream { id, headers })) => {
                if let Some(ch) = spdy::header(&headers, "streamtype").and_then(channel_of) {
                    stream_of.insert(ch, id);
                }
            }
            Ok(Some(ev)) => early.push(ev),
            Ok(None) => return Err(std::io::Error::other("spdy: client left")),
            Err(_) => {
                return Err(std::io::Error::other(
                    "spdy: timed out waiting for the client's streams",
                ))
            }
        }
    }
    let channel_at: HashMap<u32, u8> = stream_of.iter().map(|(c, i)| (*i, *c)).collect();
    let (in_tx, in_rx) = mpsc::channel(64);
    let mut events = spdy::Replay::new(early, events);
    tokio::spawn(async move {
        let mut resize_buf = Vec::new();
        while let Some(ev) = events.next().await {
            let msgs = match ev {
                Event::Data { id, data } => match channel_at.get(&id) {
                    // Resize messages are JSON documents, one per line.
                    Some(&RESIZE) => {
                        resize_buf.extend_from_slice(&data);
                        let mut msgs = Vec::new();
                        while let Some(nl) = resize_buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = resize_buf.drain(..=nl).collect();
                            msgs.push(In::Data(RESIZE, line));
                        }
                        msgs
                    }
                    Some(&ch) => vec![In::Data(ch, data)],
                    None => continue,
                },
                Event::Fin { id } | Event::Reset { id } => match channel_at.get(&id) {
                    Some(&ch) => vec![In::Close(ch)],
                    None => continue,
                },
                Event::Stream { .. } | Event::Reply { .. } => continue,
            };
            for m in msgs {
                if in_tx.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((ch, mut data)) = out_rx.recv().await {
            let Some(&id) = stream_of.get(&ch) else {
                continue;
            };
            if ch == STATUS && version < 4 {
                data = legacy_error(&data);
                if data.is_empty() {
                    continue;
                }
            }
            let frame = Frame::Data {
                id,
                fin: false,
                data,
            };
            if out.send(Out::Frame(frame)).await.is_err() {
                return;
            }
        }
        for id in stream_of.into_values() {
            let fin = Frame::Data {
                id,
                fin: true,
                data: Vec::new(),
            };
            let _ = out.send(Out::Frame(fin)).await;
        }
        let _ = out.send(Out::Close).await;
    });
    Ok((out_tx, in_rx, writer))
}

/// Before v4 the error stream carries only the message of a failure.
fn legacy_error(status: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(status).unwrap_or_default();
    if v["status"] == "Success" {
        return Vec::new();
    }
    v["message"]
        .as_str()
        .map(|m| m.as_bytes().to_vec())
        .unwrap_or_else(|| status.to_vec())
}
