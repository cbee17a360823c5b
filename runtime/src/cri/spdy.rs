//! SPDY/3.1 framing, the older transport of Kubernetes streaming (kubectl up to 1.29
//! for exec and attach, port-forward, crictl by default). Both ends keep one zlib
//! context per direction for header blocks, preset with the SPDY/3 dictionary.
//!
//! Flow control is not enforced: Go's spdystream, the only SPDY peer in this world,
//! neither sends WINDOW_UPDATE nor honours it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::io::{Error, ErrorKind, Result};
use std::sync::OnceLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u32 = 3;
/// Largest header block accepted once inflated (a block is a few hundred bytes).
const MAX_HEADERS: usize = 1 << 20;
const FLAG_FIN: u8 = 0x01;
/// Header names and values (names lower case). A name with several values appears
/// several times; on the wire they are joined by NUL.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        id: u32,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// SETTINGS or a control frame type this side does not use (the spec says ignore).
    Ignored(u16),
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): header
/// names each behind a 32-bit length, then common values run together.
fn dictionary() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        // Comma separated (no name holds a comma).
        const NAMES: &str = concat!(
            "options,head,post,put,delete,trace,accept,accept-charset,accept-encoding,",
            "accept-language,accept-ranges,age,allow,authorization,cache-control,",
            "connection,content-base,content-encoding,content-language,content-length,",
            "content-location,content-md5,content-range,content-type,date,etag,expect,",
            "expires,from,host,if-match,if-modified-since,if-none-match,if-range,",
            "if-unmodified-since,last-modified,location,max-forwards,pragma,",
            "proxy-authenticate,proxy-authorization,range,referer,retry-after,server,te,",
            "trailer,transfer-encoding,upgrade,user-agent,vary,via,warning,",
            "www-authenticate,method,get,status,200 OK,version,HTTP/1.1,url,public,",
            "set-cookie,keep-alive,origin",
        );
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414",
            "415416417502504505203 Non-Authoritative Information204 No Content",
            "301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden",
            "404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,",
            "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
            "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::new();
        for n in NAMES.split(',') {
            d.extend_from_slice(&(n.len() as u32).to_be_bytes());
            d.extend_from_slice(n.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidData, msg.into())
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| invalid("spdy: frame too short"))
}

/// Reads frames; owns the inbound header decompression context.
pub struct Reader {
    inflate: Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            inflate: Decompress::new(true),
        }
    }
}

impl Reader {
    /// The next frame, or None at a clean end of stream.
    pub async fn read(&mut self, r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let w0 = be32(&head, 0)?;
        let flags = head[4];
        let len = (be32(&head, 4)? & 0x00ff_ffff) as usize;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let fin = flags & FLAG_FIN != 0;
        if w0 & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: w0 & 0x7fff_ffff,
                fin,
                data: body,
            }));
        }
        let version = (w0 >> 16) & 0x7fff;
        if version != VERSION {
            return Err(invalid(format!("spdy: version {version}, want 3")));
        }
        let id = || be32(&body, 0).map(|v| v & 0x7fff_ffff);
        let frame = match (w0 & 0xffff) as u16 {
            1 => Frame::SynStream {
                id: id()?,
                fin,
                headers: self.headers(body.get(10..).unwrap_or_default())?,
            },
            2 => Frame::SynReply {
                id: id()?,
                fin,
                headers: self.headers(body.get(4..).unwrap_or_default())?,
            },
            3 => Frame::RstStream {
                id: id()?,
                status: be32(&body, 4)?,
            },
            6 => Frame::Ping(be32(&body, 0)?),
            7 => Frame::GoAway {
                last: id()?,
                status: be32(&body, 4).unwrap_or(0),
            },
            8 => Frame::Headers {
                id: id()?,
                headers: self.headers(body.get(4..).unwrap_or_default())?,
            },
            9 => Frame::WindowUpdate {
                id: id()?,
                delta: be32(&body, 4)? & 0x7fff_ffff,
            },
            t => Frame::Ignored(t),
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers> {
        let raw = self.inflate_block(block)?;
        let count = be32(&raw, 0)? as usize;
        let mut at = 4;
        let mut out = Vec::new();
        let field = |at: &mut usize| -> Result<String> {
            let n = be32(&raw, *at)? as usize;
            let s = raw
                .get(*at + 4..*at + 4 + n)
                .ok_or_else(|| invalid("spdy: header block too short"))?;
            *at += 4 + n;
            String::from_utf8(s.to_vec()).map_err(|_| invalid("spdy: header is not UTF-8"))
        };
        for _ in 0..count {
            let name = field(&mut at)?.to_ascii_lowercase();
            let value = field(&mut at)?;
            for v in value.split('\0') {
                out.push((name.clone(), v.to_string()));
            }
        }
        Ok(out)
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity());
            }
            let before = self.inflate.total_in();
            let res = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match res {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|_| {
                        invalid("spdy: the peer's header dictionary is not SPDY/3's")
                    })?;
                }
                Err(e) => return Err(invalid(format!("spdy: header block: {e}"))),
            }
            if input.is_empty() && out.capacity() > out.len() {
                return Ok(out);
            }
            if out.len() > MAX_HEADERS {
                return Err(invalid("spdy: header block larger than 1 MiB"));
            }
        }
    }
}

/// Encodes frames; owns the outbound header compression context.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Only fails for a dictionary set after data; this is the first call.
        let _ = deflate.set_dictionary(dictionary());
        Writer { deflate }
    }
}

impl Writer {
    pub fn encode(&mut self, f: &Frame) -> Result<Vec<u8>> {
        let (kind, flags, body) = match f {
            Frame::Data { id, fin, data } => {
                let mut v = Vec::with_capacity(8 + data.len());
                v.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                v.extend_from_slice(&len_flags(*fin as u8, data.len())?);
                v.extend_from_slice(data);
                return Ok(v);
            }
            Frame::SynStream { id, fin, headers } => {
                let mut b = Vec::new();
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                b.extend(self.block(headers)?);
                (1u16, *fin as u8, b)
            }
            Frame::SynReply { id, fin, headers } => {
                let mut b = id.to_be_bytes().to_vec();
                b.extend(self.block(headers)?);
                (2, *fin as u8, b)
            }
            Frame::RstStream { id, status } => (3, 0, pair(*id, *status)),
            Frame::Ping(id) => (6, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last, status } => (7, 0, pair(*last, *status)),
            Frame::Headers { id, headers } => {
                let mut b = id.to_be_bytes().to_vec();
                b.extend(self.block(headers)?);
                (8, 0, b)
            }
            Frame::WindowUpdate { id, delta } => (9, 0, pair(*id, *delta)),
            Frame::Ignored(t) => return Err(invalid(format!("spdy: cannot send frame type {t}"))),
        };
        let mut v = Vec::with_capacity(8 + body.len());
        v.extend_from_slice(&(0x8000_0000 | (VERSION << 16) | kind as u32).to_be_bytes());
        v.extend_from_slice(&len_flags(flags, body.len())?);
        v.extend(body);
        Ok(v)
    }

    fn block(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        // Values of one name are joined by NUL, names keep their first position.
        let mut merged: Vec<(String, String)> = Vec::new();
        for (n, v) in headers {
            let n = n.to_ascii_lowercase();
            match merged.iter_mut().find(|(m, _)| *m == n) {
                Some((_, joined)) => {
                    joined.push('\0');
                    joined.push_str(v);
                }
                None => merged.push((n, v.clone())),
            }
        }
        let mut raw = (merged.len() as u32).to_be_bytes().to_vec();
        for (n, v) in &merged {
            for s in [n, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| invalid(format!("spdy: compress: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.capacity() > out.len() {
                return Ok(out);
            }
        }
    }
}

fn pair(a: u32, b: u32) -> Vec<u8> {
    let mut v = a.to_be_bytes().to_vec();
    v.extend_from_slice(&b.to_be_bytes());
    v
}

fn len_flags(flags: u8, len: usize) -> Result<[u8; 4]> {
    if len > 0x00ff_ffff {
        return Err(invalid("spdy: frame longer than 16 MiB"));
    }
    Ok(((flags as u32) << 24 | len as u32).to_be_bytes())
}

/// The value of header `name` (first one), if any.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// What the peer did on a connection served by [`serve`].
#[derive(Debug)]
pub enum Event {
    /// The peer opened a stream (already answered with SYN_REPLY).
    Stream {
        id: u32,
        headers: Headers,
    },
    /// The peer accepted a stream we opened.
    Reply {
        id: u32,
    },
    Data {
        id: u32,
        data: Vec<u8>,
    },
    /// The peer will send no more on this stream.
    Fin {
        id: u32,
    },
    Reset {
        id: u32,
    },
}

/// Events set aside while waiting for something (the streams a session needs), then
/// the rest as they come.
pub struct Replay {
    early: std::vec::IntoIter<Event>,
    rest: mpsc::Receiver<Event>,
}

impl Replay {
    pub fn new(early: Vec<Event>, rest: mpsc::Receiver<Event>) -> Replay {
        Replay {
            early: early.into_iter(),
            rest,
        }
    }

    pub async fn next(&mut self) -> Option<Event> {
        match self.early.next() {
            Some(e) => Some(e),
            None => self.rest.recv().await,
        }
    }
}

/// What to send on a connection: frames, then an orderly end.
pub enum Out {
    Frame(Frame),
    /// GOAWAY, then close our side of the connection.
    Close,
}

/// Run one connection as the answering side: the peer opens streams, which are
/// replied to at once (spdystream drops data on streams without a reply), pings are
/// echoed. Returns the peer's events and the way to send. The connection ends when
/// `Out::Close` is sent or the peer goes away.
pub fn serve<S>(io: S) -> (mpsc::Receiver<Event>, mpsc::Sender<Out>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    connection(io, true)
}

/// Run one connection as the opening side: streams are opened by sending SYN_STREAM
/// with odd ids (1, 3, …); the peer's answers arrive as [`Event::Reply`].
pub fn open<S>(io: S) -> (mpsc::Receiver<Event>, mpsc::Sender<Out>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    connection(io, false)
}

fn connection<S>(io: S, answering: bool) -> (mpsc::Receiver<Event>, mpsc::Sender<Out>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let replies = out_tx.clone();
    let writer = tokio::spawn(async move {
        let mut w = Writer::default();
        let mut last_seen = 0;
        while let Some(m) = out_rx.recv().await {
            let frame = match m {
                Out::Frame(f) => {
                    if let Frame::SynReply { id, .. } = f {
                        last_seen = id;
                    }
                    f
                }
                Out::Close => Frame::GoAway {
                    last: last_seen,
                    status: 0,
                },
            };
            let end = matches!(frame, Frame::GoAway { .. });
            let Ok(bytes) = w.encode(&frame) else { break };
            if wr.write_all(&bytes).await.is_err() || end {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut r = Reader::default();
        loop {
            let ev = match r.read(&mut rd).await {
                Ok(Some(Frame::SynStream { id, fin, headers })) if answering => {
                    let reply = Frame::SynReply {
                        id,
                        fin: false,
                        headers: Vec::new(),
                    };
                    if replies.send(Out::Frame(reply)).await.is_err() {
                        break;
                    }
                    if ev_tx.send(Event::Stream { id, headers }).await.is_err() {
                        break;
                    }
                    if !fin {
                        continue;
                    }
                    Event::Fin { id }
                }
                Ok(Some(Frame::Data { id, fin, data })) => {
                    if !data.is_empty() && ev_tx.send(Event::Data { id, data }).await.is_err() {
                        break;
                    }
                    if !fin {
                        continue;
                    }
                    Event::Fin { id }
                }
                Ok(Some(Frame::SynReply { id, .. })) => Event::Reply { id },
                Ok(Some(Frame::RstStream { id, .. })) => Event::Reset { id },
                Ok(Some(Frame::Ping(id))) => {
                    let _ = replies.send(Out::Frame(Frame::Ping(id))).await;
                    continue;
                }
                Ok(Some(Frame::GoAway { .. })) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => continue,
            };
            if ev_tx.send(ev).await.is_err() {
                break;
            }
        }
        // The peer is gone: no more events; the writer ends when the session drops it.
        drop(replies);
        drop(writer);
    });
    (ev_rx, out_tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spec_one() {
        // Its length as the SPDY/3 draft's byte listing gives it; kubectl's SPDY exec
        // test (runtime/tests/cri.rs) checks the content through zlib's Adler-32.
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[tokio::test]
    async fn frames_round_trip_with_shared_compression() {
        let frames = vec![
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "80".into()),
                    ("port".into(), "81".into()),
                ],
            },
            Frame::SynStream {
                id: 3,
                fin: true,
                headers: vec![("streamtype".into(), "data".into())],
            },
            Frame::SynReply {
                id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: b"hello".to_vec(),
            },
            Frame::Ping(7),
            Frame::RstStream { id: 3, status: 5 },
            Frame::WindowUpdate { id: 1, delta: 100 },
            Frame::GoAway { last: 3, status: 0 },
        ];
        let mut w = Writer::default();
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(w.encode(f).unwrap());
        }
        let mut r = Reader::default();
        let mut cur = &bytes[..];
        for f in &frames {
            assert_eq!(r.read(&mut cur).await.unwrap().as_ref(), Some(f));
        }
        assert_eq!(r.read(&mut cur).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_header_block_inflating_past_the_limit_is_refused() {
        let mut w = Writer::default();
        let bytes = w
            .encode(&Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![("x".into(), "a".repeat(2 << 20))],
            })
            .unwrap();
        // Compressed it is small; inflated it would be 2 MiB.
        assert!(bytes.len() < 64 * 1024, "{}", bytes.len());
        let mut r = Reader::default();
        let err = r.read(&mut &bytes[..]).await.unwrap_err();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let mut w = Writer::default();
        let bytes = w
            .encode(&Frame::Data {
                id: 1,
                fin: false,
                data: vec![1; 10],
            })
            .unwrap();
        let mut r = Reader::default();
        let mut cur = &bytes[..12];
        assert!(r.read(&mut cur).await.is_err());
    }
}
