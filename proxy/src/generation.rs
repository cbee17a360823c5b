//! The kernel's nf_tables ruleset generation: a counter that every committed
//! transaction (ours, iptables-nft's, anyone's) increments. While it stays where our
//! last commit left it, nobody else has changed any rule, so a periodic resync can
//! skip reading the whole table back.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;

/// A netfilter netlink socket in this thread's network namespace.
pub(crate) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

thread_local! {
    /// This thread's socket, with the network namespace it was made in.
    static SOCKET: RefCell<Option<(u64, OwnedFd)>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's netfilter socket, kept open from one call to the next:
/// closing a socket right after a commit that released rules or elements waits for
/// the kernel to finish freeing them (an RCU grace period, 7–20 ms here), so a
/// socket per commit made every small change that slow. A socket is made again when
/// the thread moved to another network namespace, and dropped after an error (it may
/// hold answers nobody read).
pub(crate) fn with_socket<R>(f: impl FnOnce(&OwnedFd) -> io::Result<R>) -> io::Result<R> {
    let ns = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    let fd = match SOCKET.with(|s| s.borrow_mut().take()) {
        Some((at, fd)) if at == ns => fd,
        _ => socket()?,
    };
    let r = f(&fd);
    if r.is_ok() {
        SOCKET.with(|s| *s.borrow_mut() = Some((ns, fd)));
    }
    r
}

/// The current generation id, read over a netlink socket in this thread's network
/// namespace.
pub fn current() -> io::Result<u32> {
    with_socket(read)
}

fn read(fd: &OwnedFd) -> io::Result<u32> {
    // nlmsghdr (16 bytes) + nfgenmsg (4 bytes: family, version, res_id).
    let mut req = [0u8; 20];
    req[0..4].copy_from_slice(&20u32.to_ne_bytes());
    req[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    // SAFETY: the buffer is valid for its length; the kernel is the default peer.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 512];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&buf[..n as usize])
}

fn parse(msg: &[u8]) -> io::Result<u32> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("GETGEN: {what}"));
    if msg.len() < 20 {
        return Err(bad("short answer"));
    }
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let len = (u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize).min(msg.len());
    // Attributes follow the 16-byte header and the 4-byte nfgenmsg, 4-byte aligned.
    let mut at = 20;
    while at + 4 <= len {
        let alen = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let atype = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if alen < 4 || at + alen > len {
            break;
        }
        if atype == NFTA_GEN_ID && alen >= 8 {
            return Ok(u32::from_be_bytes([
                msg[at + 4],
                msg[at + 5],
                msg[at + 6],
                msg[at + 7],
            ]));
        }
        at += (alen + 3) & !3;
    }
    Err(bad("no generation id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_generation_attribute() {
        let mut m = vec![0u8; 20];
        m[0..4].copy_from_slice(&36u32.to_ne_bytes());
        m[4..6].copy_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        // NFTA_GEN_ID = 0x01020304, then a PROC_PID attribute.
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse(&m).unwrap(), 0x0102_0304);
        let mut err = vec![0u8; 20];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse(&err).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(parse(&m[..10]).is_err());
    }
}
