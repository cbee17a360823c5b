//! What the proxy's kernel tests share.

use std::process::Command;

/// These tests are ignored unless asked for (`--run-ignored`, as .ci/run does as root):
/// once asked, a missing need is a failure, not a pass.
pub fn require(tools: &[&str]) {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    for tool in tools {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "needs {tool}"
        );
    }
}

/// Run `f` on a thread inside the network namespace `/run/netns/<name>` (the nft,
/// iptables and ip it starts run there too).
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(path).unwrap();
        nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}
