//! The pod network between nodes that do not share a link, flannel's vxlan way: each
//! node has a VXLAN device ([`DEVICE`], VNI 1, UDP 8472, no learning) whose address is
//! the first address of its pod CIDR; for every other node, a route of its pod CIDR
//! through that node's device address (onlink), a permanent neighbour entry giving that
//! address the node's device MAC, and a forwarding entry sending that MAC to the node's
//! InternalIP. The MAC is made from the InternalIP ([`vtep_mac`]), so nothing has to be
//! published on the Node (flannel writes it into an annotation). As for host-gw, our
//! routes carry proto 83, and only our neighbour and forwarding entries (MACs with our
//! prefix) are listed and changed.

use crate::apply::{run, ApplyError};
use crate::routes::{self, Routes, PROTO};
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const DEVICE: &str = "skiff-vxlan";
pub const VNI: u32 = 1;
/// The Linux kernel's (and flannel's) VXLAN port.
pub const PORT: u16 = 8472;
/// Our MACs: locally administered, unicast.
const MAC_PREFIX: &str = "0e:5f";

/// The device MAC of the node at `underlay`.
pub fn vtep_mac(underlay: Ipv4Addr) -> String {
    let o = underlay.octets();
    format!(
        "{MAC_PREFIX}:{:02x}:{:02x}:{:02x}:{:02x}",
        o[0], o[1], o[2], o[3]
    )
}

/// The first address of a CIDR (`10.244.1.0/24` → 10.244.1.0): a node's device address.
fn network(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split_once('/')?.0.parse().ok()
}

/// What this node wants: its own device (pod CIDR's first address, InternalIP) and,
/// per other node, its pod CIDR → (device address, InternalIP).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wanted {
    pub local: Option<(Ipv4Addr, Ipv4Addr)>,
    pub peers: BTreeMap<String, (Ipv4Addr, Ipv4Addr)>,
}

pub fn desired(nodes: &[Arc<Node>], me: &str) -> Wanted {
    let peers = routes::desired(nodes, me)
        .into_iter()
        .filter_map(|(cidr, underlay)| Some((cidr.clone(), (network(&cidr)?, underlay))))
        .collect();
    let local = routes::own(nodes, me).and_then(|(cidr, ip)| Some((network(&cidr)?, ip)));
    Wanted { local, peers }
}

/// Neighbour entries (address → MAC) as `ip -4 neigh show dev DEVICE` prints them; only
/// permanent ones with our MACs.
pub fn parse_neigh(text: &str) -> BTreeMap<Ipv4Addr, String> {
    text.lines()
        .filter(|l| l.contains("PERMANENT"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let ip = w.next()?.parse().ok()?;
            let mac = w.skip_while(|x| *x != "lladdr").nth(1)?;
            mac.starts_with(MAC_PREFIX).then(|| (ip, mac.to_string()))
        })
        .collect()
}

/// Forwarding entries (MAC → InternalIP) as `bridge fdb show dev DEVICE` prints them.
pub fn parse_fdb(text: &str) -> BTreeMap<String, Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let mac = w.next()?;
            let dst = w.skip_while(|x| *x != "dst").nth(1)?.parse().ok()?;
            mac.starts_with(MAC_PREFIX).then(|| (mac.to_string(), dst))
        })
        .collect()
}

/// The `ip -batch` commands (routes and neighbours) and `bridge -batch` commands
/// (forwarding entries) that bring what is there to `w`.
pub fn commands(
    w: &Wanted,
    routes_now: &Routes,
    neigh_now: &BTreeMap<Ipv4Addr, String>,
    fdb_now: &BTreeMap<String, Ipv4Addr>,
) -> (String, String) {
    let (mut ip, mut bridge) = (String::new(), String::new());
    let routes_wanted: Routes = w
        .peers
        .iter()
        .map(|(c, (gw, _))| (c.clone(), *gw))
        .collect();
    for (dst, via) in routes_now {
        if !routes_wanted.contains_key(dst) {
            let _ = writeln!(ip, "route del {dst} via {via} proto {PROTO}");
        }
    }
    let neigh_wanted: BTreeMap<Ipv4Addr, String> = w
        .peers
        .values()
        .map(|(gw, u)| (*gw, vtep_mac(*u)))
        .collect();
    for (addr, mac) in neigh_now {
        if neigh_wanted.get(addr) != Some(mac) {
            let _ = writeln!(ip, "neigh del {addr} dev {DEVICE}");
        }
    }
    // Neighbours before the routes that use them.
    for (addr, mac) in &neigh_wanted {
        if neigh_now.get(addr) != Some(mac) {
            let _ = writeln!(
                ip,
                "neigh replace {addr} lladdr {mac} dev {DEVICE} nud permanent"
            );
        }
    }
    for (dst, via) in &routes_wanted {
        if routes_now.get(dst) != Some(via) {
            let _ = writeln!(
                ip,
                "route replace {dst} via {via} dev {DEVICE} onlink proto {PROTO}"
            );
        }
    }
    let fdb_wanted: BTreeMap<String, Ipv4Addr> =
        w.peers.values().map(|(_, u)| (vtep_mac(*u), *u)).collect();
    for (mac, dst) in fdb_now {
        if fdb_wanted.get(mac) != Some(dst) {
            let _ = writeln!(bridge, "fdb del {mac} dev {DEVICE} dst {dst} self");
        }
    }
    for (mac, dst) in &fdb_wanted {
        if fdb_now.get(mac) != Some(dst) {
            let _ = writeln!(
                bridge,
                "fdb replace {mac} dev {DEVICE} dst {dst} self permanent"
            );
        }
    }
    (ip, bridge)
}

/// The device as this node wants it: made (or made again when its underlay address or
/// MAC changed), with its address, up.
fn ensure_device(device_addr: Ipv4Addr, underlay: Ipv4Addr) -> Result<usize, ApplyError> {
    let mac = vtep_mac(underlay);
    let shown = run("ip", &["-d", "link", "show", DEVICE], None).unwrap_or_default();
    let fits = shown.contains(&format!("vxlan id {VNI} local {underlay} "))
        && shown.contains(&format!("link/ether {mac} "));
    let mut changed = 0;
    if !fits {
        if !shown.is_empty() {
            run("ip", &["link", "del", DEVICE], None)?;
        }
        let (vni, local, port) = (VNI.to_string(), underlay.to_string(), PORT.to_string());
        run(
            "ip",
            &[
                "link",
                "add",
                DEVICE,
                "address",
                &mac,
                "type",
                "vxlan",
                "id",
                &vni,
                "local",
                &local,
                "dstport",
                &port,
                "nolearning",
            ],
            None,
        )?;
        changed += 1;
    }
    let addr = format!("{device_addr}/32");
    let addrs = run("ip", &["-o", "-4", "addr", "show", "dev", DEVICE], None)?;
    if !addrs.split_whitespace().any(|w| w == addr) {
        run("ip", &["addr", "replace", &addr, "dev", DEVICE], None)?;
        changed += 1;
    }
    if !shown.contains(",UP") || !fits {
        run("ip", &["link", "set", DEVICE, "up"], None)?;
    }
    Ok(changed)
}

/// Reads what is there and changes what differs; how many things it changed. A node
/// without its own pod CIDR or InternalIP yet has no device and no routes.
pub fn reconcile(w: &Wanted) -> Result<usize, ApplyError> {
    let Some((device_addr, underlay)) = w.local else {
        return Ok(0);
    };
    let mut changed = ensure_device(device_addr, underlay)?;
    let routes_now = routes::parse(&run(
        "ip",
        &["-4", "route", "show", "proto", &PROTO.to_string()],
        None,
    )?);
    let neigh_now = parse_neigh(&run("ip", &["-4", "neigh", "show", "dev", DEVICE], None)?);
    let fdb_now = parse_fdb(&run("bridge", &["fdb", "show", "dev", DEVICE], None)?);
    let (ip, bridge) = commands(w, &routes_now, &neigh_now, &fdb_now);
    if !bridge.is_empty() {
        run("bridge", &["-batch", "-"], Some(&bridge))?;
        changed += bridge.lines().count();
    }
    if !ip.is_empty() {
        run("ip", &["-batch", "-"], Some(&ip))?;
        changed += ip.lines().count();
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_peers_and_only_ours_are_touched() {
        let mut w = Wanted {
            local: Some((
                "10.244.1.0".parse().unwrap(),
                "192.168.77.1".parse().unwrap(),
            )),
            ..Default::default()
        };
        w.peers.insert(
            "10.244.2.0/24".into(),
            (
                "10.244.2.0".parse().unwrap(),
                "192.168.78.2".parse().unwrap(),
            ),
        );
        assert_eq!(
            vtep_mac("192.168.78.2".parse().unwrap()),
            "0e:5f:c0:a8:4e:02"
        );
        let neigh = parse_neigh(
            "10.244.3.0 lladdr 0e:5f:c0:a8:4e:03 PERMANENT\n\
             10.244.9.9 lladdr 52:54:00:12:34:56 PERMANENT\n\
             10.244.2.0 lladdr 0e:5f:c0:a8:4e:02 STALE\n",
        );
        assert_eq!(neigh.len(), 1, "only our permanent entries: {neigh:?}");
        let fdb = parse_fdb(
            "0e:5f:c0:a8:4e:03 dst 192.168.78.3 self permanent\n\
             00:00:00:00:00:00 dst 10.0.0.1 self permanent\n",
        );
        assert_eq!(fdb.len(), 1);
        let routes =
            routes::parse("10.244.3.0/24 via 10.244.3.0 dev skiff-vxlan proto 83 onlink\n");
        let (ip, bridge) = commands(&w, &routes, &neigh, &fdb);
        assert_eq!(
            ip,
            "route del 10.244.3.0/24 via 10.244.3.0 proto 83\n\
             neigh del 10.244.3.0 dev skiff-vxlan\n\
             neigh replace 10.244.2.0 lladdr 0e:5f:c0:a8:4e:02 dev skiff-vxlan nud permanent\n\
             route replace 10.244.2.0/24 via 10.244.2.0 dev skiff-vxlan onlink proto 83\n"
        );
        assert_eq!(
            bridge,
            "fdb del 0e:5f:c0:a8:4e:03 dev skiff-vxlan dst 192.168.78.3 self\n\
             fdb replace 0e:5f:c0:a8:4e:02 dev skiff-vxlan dst 192.168.78.2 self permanent\n"
        );
        // Once there, nothing to do.
        let routes =
            routes::parse("10.244.2.0/24 via 10.244.2.0 dev skiff-vxlan proto 83 onlink\n");
        let neigh = parse_neigh("10.244.2.0 lladdr 0e:5f:c0:a8:4e:02 PERMANENT\n");
        let fdb = parse_fdb("0e:5f:c0:a8:4e:02 dst 192.168.78.2 self permanent\n");
        assert_eq!(
            commands(&w, &routes, &neigh, &fdb),
            (String::new(), String::new())
        );
    }
}
