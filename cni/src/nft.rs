//! Masquerade for pod traffic leaving the cluster network, in Skiff's own nftables table
//! (`ip skiff-cni`), one chain per network, rewritten atomically by `nft -f`.

use crate::error::{CniError, Result};
use std::io::Write;
use std::process::{Command, Stdio};

fn chain_name(network: &str) -> String {
    let clean: String = network
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("masq-{clean}")
}

fn nft(script: &str) -> Result<String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::Nft(format!("run nft (apt-get install nftables): {e}")))?;
    child.stdin.take().unwrap().write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(CniError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ensure: traffic from `subnet` to anything outside `cluster` is masqueraded.
pub fn ensure_masquerade(network: &str, subnet: &str, cluster: &str) -> Result<()> {
    let chain = chain_name(network);
    let listing = Command::new("nft")
        .args(["list", "chain", "ip", "skiff-cni", "postrouting"])
        .output()
        .ok();
    let has_jump = listing
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("jump {chain}")));
    let mut script = format!(
        "table ip skiff-cni {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n  chain {chain} {{ }}\n}}\n\
         flush chain ip skiff-cni {chain}\n\
         add rule ip skiff-cni {chain} ip saddr {subnet} ip daddr != {cluster} masquerade\n"
    );
    if !has_jump {
        script.push_str(&format!("add rule ip skiff-cni postrouting jump {chain}\n"));
    }
    nft(&script).map(drop)
}
