//! The monitor's attach socket: the streaming server connects to `<container dir>/attach.sock`
//! to see the container's output as it happens and to feed its stdin. Frames both ways
//! are `[stream: u8][length: u32 BE][bytes]`, with the stream numbers of the Kubernetes
//! channel protocol: 0 stdin, 1 stdout, 2 stderr, 4 resize (JSON), 255 close stdin.

use std::io::{Read, Write};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// A unix socket path usable for bind/connect even past the 108-byte limit: long paths
/// go through the directory's fd (`/proc/self/fd/N/name`); keep the returned dir open
/// while using the path.
pub fn socket_path(
    p: &std::path::Path,
) -> std::io::Result<(Option<std::fs::File>, std::path::PathBuf)> {
    if p.as_os_str().len() < 100 {
        return Ok((None, p.to_path_buf()));
    }
    let dir = std::fs::File::open(p.parent().unwrap_or(std::path::Path::new("/")))?;
    let name = p.file_name().unwrap_or_default();
    let short = std::path::Path::new(&format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ))
    .join(name);
    Ok((Some(dir), short))
}

/// Largest frame accepted; bigger ones mean a confused peer.
const MAX_FRAME: usize = 1 << 20;

pub fn write_frame(w: &mut impl Write, stream: u8, data: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(data.len() + 5);
    buf.push(stream);
    buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
    buf.extend_from_slice(data);
    w.write_all(&buf)
}

/// The next frame, or None at EOF.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("attach frame of {len} bytes"),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

/// A terminal size from a resize message (`{"Width":80,"Height":24}`).
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some((v["Width"].as_u64()? as u16, v["Height"].as_u64()? as u16))
}

/// Set a pty's window size.
pub fn resize(fd: std::os::fd::RawFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"hello").unwrap();
        write_frame(&mut buf, CLOSE, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((CLOSE, Vec::new())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
    }
}
