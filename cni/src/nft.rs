//! Masquerade for pod traffic leaving the cluster network, and host ports forwarded to
//! pods, in Skiff's own nftables table (`ip skiff-cni`), changed atomically by `nft -f`.
//! Host ports are map elements (`host port : pod ip . pod port`, one map per protocol),
//! so adding or removing a pod's ports never rewrites other pods' rules.

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

const HOSTPORT_BASE: &str = "table ip skiff-cni {
  map hostports-tcp { type inet_service : ipv4_addr . inet_service; }
  map hostports-udp { type inet_service : ipv4_addr . inet_service; }
  chain hostports { }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
  chain output { type nat hook output priority -100; policy accept; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
}
";

/// Forward each mapping's host port (on every local address, loopback included, as the
/// CNI portmap plugin does) to `ip` behind `bridge`.
pub fn add_port_mappings(
    ip: std::net::Ipv4Addr,
    bridge: &str,
    maps: &[crate::config::PortMapping],
) -> Result<()> {
    if maps.is_empty() {
        return Ok(());
    }
    // 127.0.0.1 → pod: the kernel drops packets with a loopback source on a real link
    // unless route_localnet allows them; the source is masqueraded below anyway.
    let knob = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    std::fs::write(&knob, "1")
        .map_err(|e| CniError::Nft(format!("enable {knob} for host ports on loopback: {e}")))?;
    let listing = Command::new("nft")
        .args(["list", "table", "ip", "skiff-cni"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut script = HOSTPORT_BASE.to_string();
    // Rules are added once (the base above only declares empty chains and maps).
    if !listing.contains("jump hostports") {
        script.push_str("add rule ip skiff-cni hostports meta l4proto tcp dnat ip to tcp dport map @hostports-tcp\n");
        script.push_str("add rule ip skiff-cni hostports meta l4proto udp dnat ip to udp dport map @hostports-udp\n");
        script.push_str("add rule ip skiff-cni prerouting fib daddr type local jump hostports\n");
        script.push_str("add rule ip skiff-cni output fib daddr type local jump hostports\n");
        // Connections from loopback that were sent to a pod leave with the node's address.
        script.push_str(
            "add rule ip skiff-cni postrouting ip saddr 127.0.0.0/8 ct status dnat masquerade\n",
        );
    }
    for m in maps {
        let proto = proto(&m.protocol)?;
        script.push_str(&format!(
            "add element ip skiff-cni hostports-{proto} {{ {} : {ip} . {} }}\n",
            m.host_port, m.container_port
        ));
    }
    nft(&script).map(drop)
}

/// Remove the mappings' host ports (those still pointing at `ip`); gone ones are fine.
pub fn del_port_mappings(
    ip: Option<std::net::Ipv4Addr>,
    maps: &[crate::config::PortMapping],
) -> Result<()> {
    for m in maps {
        let proto = proto(&m.protocol)?;
        let set = format!("hostports-{proto}");
        let el = Command::new("nft")
            .args([
                "get",
                "element",
                "ip",
                "skiff-cni",
                &set,
                &format!("{{ {} }}", m.host_port),
            ])
            .output();
        let Ok(el) = el else { continue };
        let text = String::from_utf8_lossy(&el.stdout);
        if !el.status.success() || ip.is_some_and(|ip| !text.contains(&format!(": {ip} . "))) {
            continue;
        }
        nft(&format!(
            "delete element ip skiff-cni {set} {{ {} }}\n",
            m.host_port
        ))?;
    }
    Ok(())
}

/// Refuse mappings this plugin cannot set up, before anything is created.
pub fn validate_port_mappings(maps: &[crate::config::PortMapping]) -> Result<()> {
    maps.iter().try_for_each(|m| proto(&m.protocol).map(drop))
}

fn proto(p: &str) -> Result<&'static str> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok("tcp"),
        "udp" => Ok("udp"),
        other => Err(CniError::InvalidConfig(format!(
            "port mapping protocol {other:?} is not supported (tcp or udp)"
        ))),
    }
}
