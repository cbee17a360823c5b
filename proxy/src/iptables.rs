//! The iptables alternative, in kube-proxy's iptables-mode layout (chains prefixed with
//! SKIFF- instead of KUBE-): a services chain with one rule per service IP and port, a
//! chain per service port choosing an endpoint by `statistic --mode random`, a chain per
//! endpoint that DNATs, marking for masquerade, and REJECT for services without
//! endpoints. Our chains are rewritten in one iptables-restore (--noflush keeps everyone
//! else's rules); the jumps from the built-in chains are added once.

use crate::model::{hash, ServicePort};
use crate::Options;
use std::fmt::Write;

pub const SERVICES: &str = "SKIFF-SERVICES";
pub const NODEPORTS: &str = "SKIFF-NODEPORTS";
pub const POSTROUTING: &str = "SKIFF-POSTROUTING";
pub const MARK_MASQ: &str = "SKIFF-MARK-MASQ";
pub const EXTERNAL: &str = "SKIFF-EXTERNAL-SERVICES";
pub const MARK_DROP: &str = "SKIFF-MARK-DROP";

fn chain(kind: &str, key: &str) -> String {
    // iptables chain names are limited to 28 characters.
    format!("SKIFF-{kind}-{}", hash(key))
}

fn sep_chain(p: &ServicePort, ip: std::net::Ipv4Addr, port: u16) -> String {
    chain("SEP", &format!("{}__{ip}/{port}", p.id()))
}

/// Rules in `from` choosing one of `eps`: a recent client goes back to its endpoint
/// (xt_recent, one list per endpoint), the rest by a `statistic` cascade; none: DROP.
fn pick(nat: &mut String, from: &str, p: &ServicePort, eps: &[(std::net::Ipv4Addr, u16)]) {
    if eps.is_empty() {
        // The nat table cannot drop: mark, and the filter table drops marked packets.
        let _ = writeln!(nat, "-A {from} -j {MARK_DROP}");
        return;
    }
    if let Some(t) = p.affinity_seconds {
        for (ip, port) in eps {
            let sep = sep_chain(p, *ip, *port);
            let _ = writeln!(
                nat,
                "-A {from} -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {t} --reap -j {sep}"
            );
        }
    }
    let n = eps.len();
    for (i, (ip, port)) in eps.iter().enumerate() {
        // Rule i of n takes 1/(n-i) of what is left: uniform overall.
        let chance = if i + 1 < n {
            format!(
                "-m statistic --mode random --probability {:.10} ",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(nat, "-A {from} {chance}-j {}", sep_chain(p, *ip, *port));
    }
}

/// Jumps from the built-in chains: (table, chain, rule args).
pub fn jumps() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let c = "-m comment --comment skiff-proxy";
    let j = |table, chain, target: &'static str| {
        let mut v: Vec<&'static str> = c.split(' ').collect();
        v.extend(["-j", target]);
        (table, chain, v)
    };
    vec![
        j("nat", "PREROUTING", SERVICES),
        j("nat", "OUTPUT", SERVICES),
        j("nat", "POSTROUTING", POSTROUTING),
        j("filter", "INPUT", EXTERNAL),
        j("filter", "FORWARD", SERVICES),
        j("filter", "OUTPUT", SERVICES),
    ]
}

/// The iptables-restore input for both tables. `existing` are the SKIFF- chains now in
/// the nat table: those no longer wanted are flushed and deleted in the same restore.
pub fn render(ports: &[ServicePort], o: &Options, existing: &[String]) -> String {
    let mut nat_chains = vec![
        SERVICES.to_string(),
        NODEPORTS.to_string(),
        POSTROUTING.to_string(),
        MARK_MASQ.to_string(),
        MARK_DROP.to_string(),
    ];
    let mut nat = String::new();
    let mut filter = String::new();
    let comment = |p: &ServicePort| format!("\"{}/{}:{}\"", p.namespace, p.name, p.port_name);
    for p in ports {
        let proto = p.protocol.name();
        let addrs: Vec<_> = p.cluster_ip.iter().chain(&p.external_ips).collect();
        if p.endpoints.is_empty() {
            for a in &addrs {
                let _ = writeln!(
                    filter,
                    "-A {SERVICES} -m comment --comment {} -d {a}/32 -p {proto} -m {proto} --dport {} -j REJECT",
                    comment(p),
                    p.port
                );
            }
            if let Some(np) = p.node_port {
                let _ = writeln!(
                    filter,
                    "-A {EXTERNAL} -m comment --comment {} -m addrtype --dst-type LOCAL -p {proto} -m {proto} --dport {np} -j REJECT",
                    comment(p)
                );
            }
            continue;
        }
        let svc = chain("SVC", &p.id());
        nat_chains.push(svc.clone());
        for a in &addrs {
            let _ = writeln!(
                nat,
                "-A {SERVICES} -m comment --comment {} -d {a}/32 -p {proto} -m {proto} --dport {} -j {svc}",
                comment(p),
                p.port
            );
        }
        if let (Some(cidr), Some(ip)) = (&o.cluster_cidr, p.cluster_ip) {
            let _ = writeln!(
                nat,
                "-A {svc} ! -s {cidr} -d {ip}/32 -p {proto} -m {proto} --dport {} -j {MARK_MASQ}",
                p.port
            );
        }
        for (ip, port) in &p.endpoints {
            let sep = sep_chain(p, *ip, *port);
            nat_chains.push(sep.clone());
            let _ = writeln!(nat, "-A {sep} -s {ip}/32 -j {MARK_MASQ}");
            if p.affinity_seconds.is_some() {
                let _ = writeln!(
                    nat,
                    "-A {sep} -m recent --name {sep} --mask 255.255.255.255 --rsource --set"
                );
            }
            let _ = writeln!(
                nat,
                "-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {ip}:{port}"
            );
        }
        let cluster = if p.internal_local {
            &p.local_endpoints
        } else {
            &p.endpoints
        };
        pick(&mut nat, &svc, p, cluster);
        if let Some(np) = p.node_port {
            let ext = chain("EXT", &p.id());
            nat_chains.push(ext.clone());
            let _ = writeln!(
                nat,
                "-A {NODEPORTS} -m comment --comment {} -p {proto} -m {proto} --dport {np} -j {ext}",
                comment(p)
            );
            if p.external_local {
                // Only this node's endpoints, and the client's address kept.
                pick(&mut nat, &ext, p, &p.local_endpoints);
            } else {
                let _ = writeln!(nat, "-A {ext} -j {MARK_MASQ}\n-A {ext} -j {svc}");
            }
        }
    }
    let _ = writeln!(
        nat,
        "-A {SERVICES} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {NODEPORTS}\n\
         -A {MARK_MASQ} -j MARK --set-xmark 0x4000/0x4000\n\
         -A {MARK_DROP} -j MARK --set-xmark 0x8000/0x8000\n\
         -A {POSTROUTING} -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A {POSTROUTING} -j MARK --xor-mark 0x4000\n\
         -A {POSTROUTING} -j MASQUERADE --random-fully"
    );
    let stale: Vec<&String> = existing
        .iter()
        .filter(|c| !nat_chains.contains(c))
        .collect();
    let mut out = String::from("*nat\n");
    for c in nat_chains.iter().chain(stale.iter().copied()) {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str(&nat);
    for c in stale {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n*filter\n");
    let _ = writeln!(out, ":{SERVICES} - [0:0]\n:{EXTERNAL} - [0:0]");
    let _ = writeln!(
        out,
        "-A {SERVICES} -m mark --mark 0x8000/0x8000 -j DROP\n-A {EXTERNAL} -m mark --mark 0x8000/0x8000 -j DROP"
    );
    out.push_str(&filter);
    out.push_str("COMMIT\n");
    out
}
