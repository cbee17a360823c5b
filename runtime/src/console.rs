//! Terminals: a pty created inside the container whose master goes to the caller over a
//! unix socket (SCM_RIGHTS, as runc's --console-socket), and a proxy for callers that
//! want the runtime itself to drive the terminal (`run`/`exec -t` without a socket).

use crate::error::{Context, Error, Result};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connect to the caller's console socket.
pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).step(|| format!("connect to console socket {}", path.display()))
}

/// In the container (after pivot_root): open a pty pair from its devpts, send the master
/// to `sock`, and make the slave this process's controlling terminal and stdio.
pub fn setup_pty(sock: RawFd, size: Option<(u16, u16)>) -> Result<()> {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .step(|| "open /dev/ptmx")?;
    grantpt(&master).step(|| "grantpt")?;
    unlockpt(&master).step(|| "unlockpt")?;
    let name = ptsname_r(&master).step(|| "ptsname")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| format!("open pty slave {name}"))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        sock,
        &[IoSlice::new(name.as_bytes())],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .step(|| "send pty master over console socket")?;
    drop(master);
    nix::unistd::setsid().ok();
    nix::errno::Errno::result(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) })
        .step(|| "make pty the controlling terminal")?;
    for fd in 0..3 {
        nix::errno::Errno::result(unsafe { libc::dup2(slave.as_raw_fd(), fd) })
            .step(|| format!("dup pty onto fd {fd}"))?;
    }
    Ok(())
}

/// Receive a pty master sent with SCM_RIGHTS.
pub fn recv_master(sock: &UnixStream) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .step(|| "receive pty master")?;
    for c in msg.cmsgs().step(|| "read control message")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Init(
        "console socket message carried no file descriptor".into(),
    ))
}

/// Copy between our stdin/stdout and the pty master until the container side closes.
/// Our own terminal (if stdin is one) is put in raw mode meanwhile.
pub fn proxy(master: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    use std::os::fd::{AsFd, BorrowedFd};
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let saved = tcgetattr(stdin).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin, SetArg::TCSANOW, &raw);
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 {
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let m = fds[0].revents().unwrap_or(PollFlags::empty());
        let s = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if m.intersects(PollFlags::POLLIN) {
            match nix::unistd::read(&master, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = nix::unistd::write(unsafe { BorrowedFd::borrow_raw(1) }, &buf[..n]);
                }
            }
        } else if m.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            break;
        }
        if s.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(&master, &buf[..n]);
                }
            }
        }
    }
    if let Some(t) = saved {
        let _ = tcsetattr(stdin, SetArg::TCSANOW, &t);
    }
}
