//! Waiting for a container process while forwarding signals to it, as `runc run` and
//! `runc exec` do in the foreground. The runtime is a child subreaper, so the container
//! process (whose own parent was a short-lived intermediate) is re-parented to us.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const FORWARD: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Block SIGCHLD and the forwarded signals; call before creating the process so no
/// signal is lost (the child resets its mask).
pub fn prepare() -> SigSet {
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARD {
        set.add(*s);
    }
    let _ = set.thread_block();
    set
}

/// Forward signals to `pid` until it exits; returns a shell-style exit code.
pub fn wait_forwarding(set: &SigSet, pid: i32) -> i32 {
    let target = Pid::from_raw(pid);
    loop {
        // Reap first: the process may already have exited before we got here.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == target => return code,
                Ok(WaitStatus::Signaled(p, sig, _)) if p == target => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) => break,
                Err(nix::errno::Errno::ECHILD) => return 255,
                Err(_) => break,
                Ok(_) => continue,
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = nix::sys::signal::kill(target, sig);
            }
            Err(_) => {}
        }
    }
}
