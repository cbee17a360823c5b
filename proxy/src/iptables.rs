//! The iptables alternative, in kube-proxy's iptables-mode layout (chains prefixed with
//! SKIFF- instead of KUBE-): a services chain with one rule per service IP and port, a
//! chain per service port choosing an endpoint by `statistic --mode random`, a chain per
//! endpoint that DNATs, marking for masquerade, and REJECT for services without
//! endpoints. Our chains are written with iptables-restore (--noflush keeps everyone
//! else's rules); the jumps from the built-in chains are added once.
//!
//! Syncs are partial (KEP-3453): the top-level chains are written whole, the chains of
//! a service port only when it changed, and chains no longer wanted are deleted. A
//! full restore happens at start, after a failed restore, and when the periodic resync
//! finds that someone else changed the ruleset (its generation moved).

use crate::apply::{run, ApplyError};
use crate::generation;
use crate::model::{hash, ServicePort};
use crate::nftables::Outcome;
use crate::Options;
use std::collections::{BTreeMap, BTreeSet};
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

/// The nat chains of a service port.
pub fn chains_of(p: &ServicePort) -> Vec<String> {
    if p.endpoints.is_empty() {
        return Vec::new();
    }
    let mut out = vec![chain("SVC", &p.id())];
    out.extend(
        p.endpoints
            .iter()
            .map(|(ip, port)| sep_chain(p, *ip, *port)),
    );
    if p.node_port.is_some() {
        out.push(chain("EXT", &p.id()));
    }
    out
}

/// The iptables-restore input for both tables. `only`: write the chains of just these
/// service ports (a partial sync; None writes all); `stale`: nat chains to delete.
pub fn render(
    ports: &[ServicePort],
    o: &Options,
    only: Option<&BTreeSet<String>>,
    stale: &[String],
) -> String {
    let mut nat_chains = vec![
        SERVICES.to_string(),
        NODEPORTS.to_string(),
        POSTROUTING.to_string(),
        MARK_MASQ.to_string(),
        MARK_DROP.to_string(),
    ];
    let mut nat = String::new();
    let mut chain_rules = String::new();
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
        let write = only.is_none_or(|ids| ids.contains(&p.id()));
        // The chains of an unchanged port stay as they are: only referred to.
        let mut own = String::new();
        if write {
            nat_chains.push(svc.clone());
        }
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
                own,
                "-A {svc} ! -s {cidr} -d {ip}/32 -p {proto} -m {proto} --dport {} -j {MARK_MASQ}",
                p.port
            );
        }
        for (ip, port) in &p.endpoints {
            let sep = sep_chain(p, *ip, *port);
            if write {
                nat_chains.push(sep.clone());
            }
            let _ = writeln!(own, "-A {sep} -s {ip}/32 -j {MARK_MASQ}");
            if p.affinity_seconds.is_some() {
                let _ = writeln!(
                    own,
                    "-A {sep} -m recent --name {sep} --mask 255.255.255.255 --rsource --set"
                );
            }
            let _ = writeln!(
                own,
                "-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {ip}:{port}"
            );
        }
        let cluster = if p.internal_local {
            &p.local_endpoints
        } else {
            &p.endpoints
        };
        pick(&mut own, &svc, p, cluster);
        if let Some(np) = p.node_port {
            let ext = chain("EXT", &p.id());
            if write {
                nat_chains.push(ext.clone());
            }
            let _ = writeln!(
                nat,
                "-A {NODEPORTS} -m comment --comment {} -p {proto} -m {proto} --dport {np} -j {ext}",
                comment(p)
            );
            if p.external_local {
                // Only this node's endpoints, and the client's address kept.
                pick(&mut own, &ext, p, &p.local_endpoints);
            } else {
                let _ = writeln!(own, "-A {ext} -j {MARK_MASQ}\n-A {ext} -j {svc}");
            }
        }
        if write {
            chain_rules.push_str(&own);
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
    let mut out = String::from("*nat\n");
    for c in nat_chains.iter().chain(stale) {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str(&nat);
    out.push_str(&chain_rules);
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

/// The iptables mode's proxier: remembers what it wrote, to write only what changed.
pub struct Iptables {
    opts: Options,
    /// Service ports last written; None: the next sync restores everything.
    last: Option<BTreeMap<String, ServicePort>>,
    /// The ruleset generation our last write left.
    generation: Option<u32>,
}

impl Iptables {
    pub fn new(opts: Options) -> Iptables {
        Iptables {
            opts,
            last: None,
            generation: None,
        }
    }

    pub fn sync(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        let new: BTreeMap<String, ServicePort> =
            ports.iter().map(|p| (p.id(), p.clone())).collect();
        let before = generation::current().ok();
        let (text, chains) = match self.last.take() {
            Some(old) => {
                let mut changed = BTreeSet::new();
                let mut stale = BTreeSet::new();
                for (id, p) in &old {
                    if new.get(id) != Some(p) {
                        changed.insert(id.clone());
                        stale.extend(chains_of(p));
                    }
                }
                for (id, p) in &new {
                    if old.get(id) != Some(p) {
                        changed.insert(id.clone());
                    }
                }
                if changed.is_empty() {
                    self.last = Some(old);
                    return Ok(Outcome::default());
                }
                for id in &changed {
                    if let Some(p) = new.get(id) {
                        for c in chains_of(p) {
                            stale.remove(&c);
                        }
                    }
                }
                let stale: Vec<String> = stale.into_iter().collect();
                let n = changed.len() + stale.len();
                (render(ports, &self.opts, Some(&changed), &stale), n)
            }
            None => {
                let wanted: BTreeSet<String> = ports.iter().flat_map(chains_of).collect();
                let stale: Vec<String> = skiff_chains("nat")?
                    .into_iter()
                    .filter(|c| c.contains("-SVC-") || c.contains("-SEP-") || c.contains("-EXT-"))
                    .filter(|c| !wanted.contains(c))
                    .collect();
                let n = wanted.len() + stale.len();
                (render(ports, &self.opts, None, &stale), n)
            }
        };
        self.generation = None;
        // On failure `last` stays None: the next sync restores everything.
        run("iptables-restore", &["-w", "--noflush"], Some(&text))?;
        let inserted = ensure_jumps()?;
        self.last = Some(new);
        // iptables-restore commits once per table it writes (nat, filter); anything
        // beyond our own commits means someone else wrote too.
        if let (Some(b), Ok(a)) = (before, generation::current()) {
            if a.wrapping_sub(b) <= 2 + inserted {
                self.generation = Some(a);
            }
        }
        Ok(Outcome {
            chains,
            elements: 0,
            read_back: false,
        })
    }

    /// The periodic check: a full restore when anyone else changed the ruleset.
    pub fn resync(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        let now = generation::current().map_err(|e| ApplyError::Spawn("GETGEN".into(), e))?;
        if self.generation != Some(now) {
            self.last = None;
        }
        let full = self.last.is_none();
        let mut o = self.sync(ports)?;
        o.read_back = full;
        Ok(o)
    }
}

/// Our chains in an iptables table.
pub fn skiff_chains(table: &str) -> Result<Vec<String>, ApplyError> {
    let out = run("iptables-save", &["-t", table], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("SKIFF-"))
        .map(String::from)
        .collect())
}

/// Adds the jumps from the built-in chains that are missing; how many it added.
fn ensure_jumps() -> Result<u32, ApplyError> {
    let mut added = 0;
    for (table, chain, rule) in jumps() {
        let mut check = vec!["-w", "-t", table, "-C", chain];
        check.extend(&rule);
        if run("iptables", &check, None).is_err() {
            let mut insert = vec!["-w", "-t", table, "-I", chain, "1"];
            insert.extend(&rule);
            run("iptables", &insert, None)?;
            added += 1;
        }
    }
    Ok(added)
}
