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
