//! The pod network between nodes, flannel's host-gw way: every other node's
//! `spec.podCIDR` is routed through that node's InternalIP, so pods on different nodes
//! reach each other without encapsulation (the nodes must share a link). The routes are
//! ours by their routing protocol number ([`PROTO`]): a reconcile lists only those and
//! changes only what differs from the Node objects, leaving every other route alone.

use crate::apply::{run, ApplyError};
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The `proto` our routes carry (`ip route show proto 83`).
pub const PROTO: u8 = 83;

/// Pod CIDR → the node address it is reached through.
pub type Routes = BTreeMap<String, Ipv4Addr>;

/// An IPv4 CIDR in canonical form (`10.244.1.0/24`), or None.
fn cidr(s: &str) -> Option<String> {
    let (a, p) = s.split_once('/')?;
    let (a, p): (Ipv4Addr, u8) = (a.parse().ok()?, p.parse().ok()?);
    if p > 32 {
        return None;
    }
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    Some(format!("{}/{p}", Ipv4Addr::from(u32::from(a) & mask)))
}

/// A node's IPv4 pod CIDRs (canonical) and IPv4 InternalIP.
fn cidrs_and_ip(n: &Node) -> (Vec<String>, Option<Ipv4Addr>) {
    let cidrs = n
        .spec
        .iter()
        .flat_map(|spec| spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter()))
        .filter_map(|c| cidr(c))
        .collect();
    let ip = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok());
    (cidrs, ip)
}

/// The routes this node (`me`) wants: one per other node with an IPv4 pod CIDR and an
/// IPv4 InternalIP.
pub fn desired(nodes: &[Arc<Node>], me: &str) -> Routes {
    let mut out = Routes::new();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(me) || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let (cidrs, Some(via)) = cidrs_and_ip(n) {
            for c in cidrs {
                out.insert(c, via);
            }
        }
    }
    out
}

/// This node's own (first) IPv4 pod CIDR and InternalIP, once it has both.
pub fn own(nodes: &[Arc<Node>], me: &str) -> Option<(String, Ipv4Addr)> {
    let n = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))?;
    let (cidrs, ip) = cidrs_and_ip(n);
    Some((cidrs.into_iter().next()?, ip?))
}

/// Our routes as `ip -4 route show proto 83` prints them.
pub fn parse(text: &str) -> Routes {
    let mut out = Routes::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(dst) = words.next().and_then(cidr_or_host) else {
            continue;
        };
        let mut via = None;
        while let Some(w) = words.next() {
            if w == "via" {
                via = words.next().and_then(|v| v.parse().ok());
            }
        }
        if let Some(v) = via {
            out.insert(dst, v);
        }
    }
    out
}

/// `ip route` prints a /32 without its length.
fn cidr_or_host(s: &str) -> Option<String> {
    if s.contains('/') {
        cidr(s)
    } else {
        s.parse::<Ipv4Addr>().ok().map(|a| format!("{a}/32"))
    }
}

/// The `ip -batch` commands that bring `current` to `wanted`.
pub fn commands(current: &Routes, wanted: &Routes) -> String {
    let mut s = String::new();
    for (dst, via) in current {
        if !wanted.contains_key(dst) {
            let _ = writeln!(s, "route del {dst} via {via} proto {PROTO}");
        }
    }
    for (dst, via) in wanted {
        if current.get(dst) != Some(via) {
            let _ = writeln!(s, "route replace {dst} via {via} proto {PROTO}");
        }
    }
    s
}

/// Reads our routes and changes what differs; how many routes it changed.
pub fn reconcile(wanted: &Routes) -> Result<usize, ApplyError> {
    let current = parse(&run(
        "ip",
        &["-4", "route", "show", "proto", &PROTO.to_string()],
        None,
    )?);
    let cmds = commands(&current, wanted);
    if cmds.is_empty() {
        return Ok(0);
    }
    run("ip", &["-batch", "-"], Some(&cmds))?;
    Ok(cmds.lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": ip.map(|ip| vec![
                    serde_json::json!({"type": "Hostname", "address": name}),
                    serde_json::json!({"type": "InternalIP", "address": ip}),
                ]).unwrap_or_default()}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn routes_follow_nodes() {
        let nodes = [
            node("a", Some("10.244.0.0/24"), Some("192.168.5.1")),
            node("b", Some("10.244.1.7/24"), Some("192.168.5.2")),
            node("c", None, Some("192.168.5.3")),
            node("d", Some("10.244.3.0/24"), None),
            node("e", Some("fd00::/64"), Some("192.168.5.5")),
        ];
        let w = desired(&nodes, "a");
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            [("10.244.1.0/24".to_string(), "192.168.5.2".parse().unwrap())]
        );
    }

    #[test]
    fn commands_change_only_what_differs() {
        let current = parse(
            "10.244.1.0/24 via 192.168.5.2 dev eth0 proto 83\n\
             10.244.2.0/24 via 192.168.5.9 dev eth0 proto 83\n\
             10.244.9.0/24 via 192.168.5.4 dev eth0 proto 83 onlink\n",
        );
        assert_eq!(current.len(), 3);
        let mut wanted = Routes::new();
        wanted.insert("10.244.1.0/24".into(), "192.168.5.2".parse().unwrap());
        wanted.insert("10.244.2.0/24".into(), "192.168.5.3".parse().unwrap());
        wanted.insert("10.244.4.0/24".into(), "192.168.5.4".parse().unwrap());
        let c = commands(&current, &wanted);
        assert_eq!(
            c,
            "route del 10.244.9.0/24 via 192.168.5.4 proto 83\n\
             route replace 10.244.2.0/24 via 192.168.5.3 proto 83\n\
             route replace 10.244.4.0/24 via 192.168.5.4 proto 83\n"
        );
        assert_eq!(commands(&wanted, &wanted), "");
    }
}
