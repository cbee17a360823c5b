//! Some gRPC clients put a unix socket's path in HTTP/2's `:authority`: grpc-go as
//! crictl and the kubelet used it before Kubernetes 1.26 (kubernetes#112597), grpc-java,
//! Python's grpc. h2, under tonic, refuses that as a malformed request. Each connection
//! passes through here: if its first request names such an authority, every request
//! header block is re-encoded on the way in with `localhost`; otherwise the connection
//! is copied untouched from then on. Only the client's side is read; answers go
//! straight back.

use loona_hpack::{Decoder, Encoder};
use std::io::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a server may have.
const MAX_FRAME: usize = 16384;
/// Largest header block gathered (h2's own default limit is 16 KiB of headers).
const MAX_BLOCK: usize = 1 << 20;

/// Serve `io` through the fixer; the returned stream is what the HTTP/2 server reads.
pub fn fix<S>(io: S) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (client_r, mut client_w) = tokio::io::split(io);
    let (mut server_r, mut server_w) = tokio::io::split(ours);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = inbound(client_r, &mut server_w).await;
        let _ = server_w.shutdown().await;
    });
    theirs
}

fn bad(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidData, format!("http/2: {msg}"))
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// One header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, to pass on unchanged.
    raw: Vec<u8>,
}

async fn inbound(r: impl AsyncRead + Unpin, w: &mut (impl AsyncWrite + Unpin)) -> Result<()> {
    let mut r = BufReader::new(r);
    let mut preface = [0u8; PREFACE_LEN];
    r.read_exact(&mut preface).await?;
    w.write_all(&preface).await?;
    let mut decoder = Decoder::new();
    let mut encoder: Option<Encoder> = None;
    let mut block: Option<Block> = None;
    loop {
        let mut head = [0u8; 9];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        match kind {
            HEADERS => {
                let mut p = &payload[..];
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *p.first().ok_or_else(|| bad("short HEADERS"))? as usize;
                    p = &p[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let b: [u8; 5] = p
                        .get(..5)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| bad("short HEADERS"))?;
                    priority = Some(b);
                    p = &p[5..];
                }
                let fragment = p
                    .get(..p.len().saturating_sub(pad))
                    .ok_or_else(|| bad("bad padding"))?
                    .to_vec();
                let mut raw = head.to_vec();
                raw.extend_from_slice(&payload);
                block = Some(Block {
                    stream,
                    flags,
                    priority,
                    fragment,
                    raw,
                });
            }
            CONTINUATION if block.as_ref().is_some_and(|b| b.stream == stream) => {
                let b = block.as_mut().expect("checked");
                if b.fragment.len() + payload.len() > MAX_BLOCK {
                    return Err(bad("header block larger than 1 MiB"));
                }
                b.fragment.extend_from_slice(&payload);
                b.raw.extend_from_slice(&head);
                b.raw.extend_from_slice(&payload);
                b.flags |= flags & END_HEADERS;
            }
            _ => {
                w.write_all(&head).await?;
                w.write_all(&payload).await?;
                continue;
            }
        }
        if block.as_ref().is_some_and(|b| b.flags & END_HEADERS == 0) {
            continue;
        }
        let b = block.take().expect("a complete block");
        let headers = decoder
            .decode(&b.fragment)
            .map_err(|e| bad(&e.to_string()))?;
        if encoder.is_none() {
            let fine = headers
                .iter()
                .all(|(n, v)| n != b":authority" || valid_authority(v));
            if fine {
                // The client's own encoding stays valid: pass everything on as it comes.
                w.write_all(&b.raw).await?;
                tokio::io::copy(&mut r, w).await?;
                return Ok(());
            }
            encoder = Some(Encoder::new());
        }
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(n, v)| match n == b":authority" && !valid_authority(&v) {
                true => (n, b"localhost".to_vec()),
                false => (n, v),
            })
            .collect();
        let enc = encoder.as_mut().expect("set above");
        let encoded = enc.encode(fixed.iter().map(|(n, v)| (&n[..], &v[..])));
        write_block(w, &b, &encoded).await?;
    }
}

/// The block as one HEADERS frame (plus CONTINUATION frames when long).
async fn write_block(w: &mut (impl AsyncWrite + Unpin), b: &Block, encoded: &[u8]) -> Result<()> {
    let prio = b.priority.map(|p| p.to_vec()).unwrap_or_default();
    let first_room = MAX_FRAME - prio.len();
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = b.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let mut payload = prio;
    payload.extend_from_slice(first);
    frame(w, HEADERS, flags, b.stream, &payload).await?;
    while !rest.is_empty() {
        let (chunk, more) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = more;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame(w, CONTINUATION, flags, b.stream, chunk).await?;
    }
    Ok(())
}

async fn frame(
    w: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut head = [len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    head[5..].copy_from_slice(&stream.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn headers_frame(enc: &mut Encoder, stream: u32, authority: &[u8]) -> Vec<u8> {
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ]);
        let mut out = Vec::new();
        let len = (block.len() as u32).to_be_bytes();
        out.extend_from_slice(&[len[1], len[2], len[3], HEADERS, END_HEADERS]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend(block);
        out
    }

    /// Run the fixer over `input`; return what the server side would read.
    async fn through(input: Vec<u8>) -> Vec<u8> {
        let (client, mut peer) = tokio::io::duplex(1 << 20);
        let mut server = fix(client);
        peer.write_all(&input).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut out = Vec::new();
        server.read_to_end(&mut out).await.unwrap();
        out
    }

    fn authorities(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut dec = Decoder::new();
        let mut found = Vec::new();
        while bytes.len() >= 9 {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let (kind, payload) = (bytes[3], &bytes[9..9 + len]);
            if kind == HEADERS {
                for (n, v) in dec.decode(payload).unwrap() {
                    if n == b":authority" {
                        found.push(v);
                    }
                }
            }
            bytes = &bytes[9 + len..];
        }
        found
    }

    #[tokio::test]
    async fn socket_path_authorities_become_localhost() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame in between passes as it is.
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        input.extend(headers_frame(&mut enc, 1, b"/run/skiff/cri.sock"));
        input.extend(headers_frame(&mut enc, 3, b"/run/skiff/cri.sock"));
        let out = through(input).await;
        assert_eq!(
            authorities(&out),
            [b"localhost".to_vec(), b"localhost".to_vec()]
        );
    }

    #[tokio::test]
    async fn valid_authorities_pass_untouched() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&mut enc, 1, b"localhost"));
        input.extend(headers_frame(&mut enc, 3, b"localhost"));
        let out = through(input.clone()).await;
        assert_eq!(out, input);
    }
}
