//! The sync channel between the runtime and the container's init during create/exec:
//! newline-delimited JSON messages over a socketpair.

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Child created a user namespace: write its id maps.
    Userns,
    /// The id maps are written / hooks ran: go on. After the hooks it carries the
    /// container state (with the init pid) for the hooks init runs itself.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<serde_json::Value>,
    },
    /// Host pid of the container init (or exec'd process).
    Pid {
        pid: i32,
    },
    /// Mounts are done, before pivot_root: run prestart and createRuntime hooks.
    Hooks,
    /// Setup finished; init is waiting on the exec fifo.
    Ready,
    /// The seccomp notification fd is on the fd socket: hand it to the agent, then ack.
    Seccomp,
    /// From the exec stub: the final execve failed.
    ExecFailed {
        errno: i32,
    },
    Error {
        msg: String,
    },
}

pub struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    /// The fds the channel holds (the child keeps these open through setup).
    pub fn fds(&self) -> [std::os::fd::RawFd; 2] {
        use std::os::fd::AsRawFd;
        [self.reader.get_ref().as_raw_fd(), self.writer.as_raw_fd()]
    }

    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair().step(|| "create sync socketpair")?;
        Ok((Channel::new(a)?, Channel::new(b)?))
    }

    fn new(s: UnixStream) -> Result<Channel> {
        let w = s.try_clone().step(|| "clone sync socket")?;
        Ok(Channel {
            reader: BufReader::new(s),
            writer: w,
        })
    }

    pub fn send(&mut self, m: &Msg) -> Result<()> {
        let mut line = serde_json::to_vec(m).expect("message serializes");
        line.push(b'\n');
        self.writer.write_all(&line).step(|| "send on sync channel")
    }

    /// Next message; `None` when the peer closed without a word (it died).
    pub fn recv(&mut self) -> Result<Option<Msg>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .step(|| "read sync channel")?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| Error::Init(format!("bad sync message {line:?}: {e}")))
    }

    pub fn expect_ack(&mut self) -> Result<Option<serde_json::Value>> {
        match self.recv()? {
            Some(Msg::Ack { state }) => Ok(state),
            other => Err(Error::Init(format!(
                "expected ack from runtime, got {other:?}"
            ))),
        }
    }
}

/// Pass one fd over a unix socket (the seccomp notification fd, child to runtime). Kept
/// apart from the JSON channel: its buffered reader would drop the ancillary data.
pub fn send_fd(sock: std::os::fd::RawFd, fd: std::os::fd::RawFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let iov = [std::io::IoSlice::new(b"f")];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .step(|| "pass the seccomp fd to the runtime")
}

pub fn recv_fd(sock: std::os::fd::RawFd) -> Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .step(|| "receive the seccomp fd")?;
    for c in msg.cmsgs().step(|| "read control message")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Init("the container init sent no seccomp fd".into()))
}
