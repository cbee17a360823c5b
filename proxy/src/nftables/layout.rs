//! What the table holds, as data: a fixed part (hooks, masquerading, the shared maps)
//! and one fragment per service port.
//!
//! The layout keeps the kernel's work per transaction proportional to what changes.
//! nf_tables finds sets by walking the table's list of them, names anonymous sets by
//! scanning that list, and checks every element added to a map against every rule that
//! reads the map. So there is no set per service (kube-proxy's anonymous `numgen ...
//! vmap` per service made a full sync O(N²)), and no map that many rules read:
//! - one verdict map from (address, protocol, port) to the service port's chain,
//!   read by one rule;
//! - in that chain, the endpoint is picked by a cascade of rules, rule i of n taking
//!   `numgen random mod (n-i)` == 0 (uniform overall, as iptables' statistic cascade);
//! - hairpin traffic (a pod reaching itself through its Service) is masqueraded by one
//!   rule looking up (source, destination) after DNAT in one shared set;
//! - session affinity is one shared dynamic map (client, service address, port) →
//!   endpoint, read by one rule and filled by the chosen endpoint's rule.

use super::service_rule::{parse_cidr, ServiceRule};
use super::table::Edits;
use super::table::{Chain, Rule, Set, Table};
use crate::model::{hash, ServicePort};
use crate::Options;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const HAIRPIN: &str = "hairpin";
pub const AFFINITY: &str = "affinity";

/// The label of the fixed part's rules.
const FIXED: &str = "skiff-proxy";

/// What one service port adds to the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    pub chains: Vec<(String, Chain)>,
    /// (set, element)
    pub elements: Vec<(&'static str, String)>,
}

fn service_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("service-{}-{id}", hash(&id))
}

fn external_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("external-{}-{id}", hash(&id))
}

/// `ns/name:port`, the comment naming the Service on each of its rules.
fn label(p: &ServicePort) -> String {
    if p.port_name.is_empty() {
        format!("{}/{}", p.namespace, p.name)
    } else {
        format!("{}/{}:{}", p.namespace, p.name, p.port_name)
    }
}

/// The hairpin element for an endpoint address.
pub fn hairpin(ip: Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

/// An element's key: the part before ` : `.
fn key_of(element: &str) -> &str {
    element.split(" : ").next().unwrap_or(element)
}

/// Who claims each element key. Service ports share elements (two ports of one
/// endpoint address claim the same hairpin element) and, with bad input, collide (two
/// Services given the same external IP and port): a key holds one element, the claim
/// of the smallest service port id, whichever order the claims came in, so a sync and
/// a read-back agree. Losing a claim hands the key to the next claimant.
#[derive(Debug, Default)]
pub struct Claims {
    keys: HashMap<(&'static str, String), BTreeMap<String, String>>,
}

/// The element a key held before a sync touched it: (set, key) → element.
pub type Touched = BTreeMap<(&'static str, String), Option<String>>;

impl Claims {
    fn winner(&self, k: &(&'static str, String)) -> Option<String> {
        self.keys.get(k).and_then(|c| c.values().next().cloned())
    }

    /// Service port `id` goes from the elements of `old` to those of `new`.
    /// `touched` records, for each key this changes, the element it held before.
    pub fn change(
        &mut self,
        id: &str,
        old: &Fragment,
        new: &Fragment,
        mut touched: Option<&mut Touched>,
    ) {
        for (set, e) in old.elements.iter().chain(&new.elements) {
            let Some(touched) = touched.as_deref_mut() else {
                break;
            };
            let k = (*set, key_of(e).to_string());
            if let std::collections::btree_map::Entry::Vacant(v) = touched.entry(k) {
                let before = self.winner(v.key());
                v.insert(before);
            }
        }
        for (set, e) in &old.elements {
            let k = (*set, key_of(e).to_string());
            if let Some(c) = self.keys.get_mut(&k) {
                c.remove(id);
                if c.is_empty() {
                    self.keys.remove(&k);
                }
            }
        }
        for (set, e) in &new.elements {
            let claims = self.keys.entry((*set, key_of(e).to_string())).or_default();
            if claims.values().any(|other| other != e) {
                tracing::warn!(
                    set,
                    element = e.as_str(),
                    service_port = id,
                    "another service port claims this key; the smallest id keeps it"
                );
            }
            claims.insert(id.to_string(), e.clone());
        }
    }

    /// The element edits for the touched keys.
    pub fn edits(&self, touched: Touched, edits: &mut Edits) {
        for (k, before) in touched {
            let after = self.winner(&k);
            if before == after {
                continue;
            }
            if let Some(b) = before {
                edits.delete_element(k.0, &b);
            }
            if let Some(a) = after {
                edits.add_element(k.0, &a);
            }
        }
    }

    /// Every element, in its set.
    fn fill(&self, t: &mut Table) {
        for (k, _) in self.keys.iter() {
            if let (Some(set), Some(e)) = (t.sets.get_mut(k.0), self.winner(k)) {
                set.elements.insert(e);
            }
        }
    }
}

pub fn fragment(p: &ServicePort, o: &Options) -> Fragment {
    let proto = p.protocol.name();
    let addrs: Vec<Ipv4Addr> = p
        .cluster_ip
        .iter()
        .chain(&p.external_ips)
        .copied()
        .collect();
    let mut f = Fragment::default();
    if p.endpoints.is_empty() {
        for a in &addrs {
            f.elements.push((
                NO_ENDPOINT_SERVICES,
                format!("{a} . {proto} . {} : goto reject-chain", p.port),
            ));
        }
        if let Some(np) = p.node_port {
            f.elements.push((
                NO_ENDPOINT_NODEPORTS,
                format!("{proto} . {np} : goto reject-chain"),
            ));
        }
        return f;
    }
    let l = label(p);
    let svc = service_chain(p);
    let mut addresses: Vec<Ipv4Addr> = p.endpoints.iter().map(|(ip, _)| *ip).collect();
    addresses.dedup();
    for ip in addresses {
        f.elements.push((HAIRPIN, hairpin(ip)));
    }
    for a in &addrs {
        f.elements.push((
            SERVICE_IPS,
            format!("{a} . {proto} . {} : goto {svc}", p.port),
        ));
    }
    let mut rules = Vec::new();
    // A /0 cluster CIDR leaves no one outside it.
    let cidr = o
        .cluster_cidr
        .as_deref()
        .and_then(parse_cidr)
        .filter(|c| c.1 > 0);
    if let (Some(cidr), Some(ip)) = (cidr, p.cluster_ip) {
        rules.push(Rule::service(
            &l,
            ServiceRule::MasqueradeOutside {
                ip,
                protocol: p.protocol,
                port: p.port,
                cidr,
            },
        ));
    }
    let cluster = if p.internal_local {
        &p.local_endpoints
    } else {
        &p.endpoints
    };
    rules.extend(pick(p, cluster, &l));
    f.chains.push((
        svc.clone(),
        Chain {
            header: None,
            rules,
        },
    ));
    if let Some(np) = p.node_port {
        let ext = external_chain(p);
        f.elements
            .push((SERVICE_NODEPORTS, format!("{proto} . {np} : goto {ext}")));
        let rules = if p.external_local {
            // Only this node's endpoints, and the client's address kept (no masquerade).
            pick(p, &p.local_endpoints, &l)
        } else {
            vec![
                Rule::service(&l, ServiceRule::Jump("mark-for-masquerade".into())),
                Rule::service(&l, ServiceRule::Goto(svc.clone())),
            ]
        };
        f.chains.push((
            ext,
            Chain {
                header: None,
                rules,
            },
        ));
    }
    f
}

/// Rules choosing one of `eps`: a client seen lately goes back to its endpoint, the
/// rest by the cascade; none to choose: drop.
fn pick(p: &ServicePort, eps: &[(Ipv4Addr, u16)], l: &str) -> Vec<Rule> {
    if eps.is_empty() {
        return vec![Rule::service(l, ServiceRule::Drop)];
    }
    let mut rules = Vec::new();
    if p.affinity_seconds.is_some() {
        rules.push(Rule::service(
            l,
            ServiceRule::Jump("affinity-lookup".into()),
        ));
    }
    let n = eps.len();
    for (i, (ip, port)) in eps.iter().enumerate() {
        rules.push(Rule::service(
            l,
            ServiceRule::Dnat {
                protocol: p.protocol,
                of: (i + 1 < n).then_some((n - i) as u32),
                affinity: p.affinity_seconds,
                ip: *ip,
                port: *port,
            },
        ));
    }
    rules
}

/// The table's fixed part: hooks, masquerading, rejecting, and the shared maps.
pub fn fixed() -> Table {
    let mut t = Table::default();
    let ip_key = "ipv4_addr . inet_proto . inet_service";
    let port_key = "inet_proto . inet_service";
    for (name, key) in [
        (SERVICE_IPS, ip_key),
        (SERVICE_NODEPORTS, port_key),
        (NO_ENDPOINT_SERVICES, ip_key),
        (NO_ENDPOINT_NODEPORTS, port_key),
    ] {
        t.sets.insert(
            name.into(),
            Set {
                decl: format!("type {key} : verdict;"),
                ..Set::default()
            },
        );
    }
    t.sets.insert(
        HAIRPIN.into(),
        Set {
            decl: "type ipv4_addr . ipv4_addr;".into(),
            ..Set::default()
        },
    );
    t.sets.insert(
        AFFINITY.into(),
        Set {
            decl: "type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; \
                   flags dynamic,timeout; timeout 3h;"
                .into(),
            dynamic: true,
            ..Set::default()
        },
    );
    let chain = |rules: &[&str]| Chain {
        header: None,
        rules: rules
            .iter()
            .map(|r| Rule::new(FIXED, r.to_string()))
            .collect(),
    };
    let base = |header: String, rules: &[&str]| {
        let mut c = Chain::base(&header);
        c.rules = chain(rules).rules;
        c
    };
    let local = "fib daddr type local ip daddr != 127.0.0.0/8";
    let chains = [
        (
            "mark-for-masquerade",
            chain(&["meta mark set meta mark | 0x4000"]),
        ),
        (
            "masquerading",
            chain(&[
                // A pod that reached itself through its Service: its reply must come
                // back through the node, so the source is rewritten.
                "ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade",
                "meta mark & 0x4000 == 0 return",
                "meta mark set meta mark ^ 0x4000",
                "masquerade fully-random",
            ]),
        ),
        (
            "nat-prerouting",
            base(
                "type nat hook prerouting priority -100; policy accept;".into(),
                &["jump services"],
            ),
        ),
        (
            "nat-output",
            base(
                "type nat hook output priority -100; policy accept;".into(),
                &["jump services"],
            ),
        ),
        (
            "nat-postrouting",
            base(
                "type nat hook postrouting priority 100; policy accept;".into(),
                &["jump masquerading"],
            ),
        ),
        ("reject-chain", chain(&["reject"])),
        (
            "endpoints-check",
            chain(&[
                "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
                &format!("{local} meta l4proto . th dport vmap @no-endpoint-nodeports"),
            ]),
        ),
        (
            "services",
            chain(&[
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                &format!("{local} meta l4proto . th dport vmap @service-nodeports"),
            ]),
        ),
        (
            "affinity-lookup",
            chain(&[
                "meta l4proto { tcp, udp, sctp } dnat ip to ip saddr . ip daddr . th dport map @affinity",
            ]),
        ),
    ];
    for (name, c) in chains {
        t.chains.insert(name.into(), c);
    }
    // Before DNAT (priority -100): a service with no endpoints is refused.
    for hook in ["input", "forward", "output"] {
        t.chains.insert(
            format!("filter-{hook}"),
            base(
                format!("type filter hook {hook} priority -110; policy accept;"),
                &["ct state new jump endpoints-check"],
            ),
        );
    }
    t
}

/// The whole table these service ports want, with each port's fragment and the
/// claims on the shared elements.
pub fn assemble<'a>(
    ports: impl IntoIterator<Item = &'a ServicePort>,
    o: &Options,
) -> (Table, HashMap<String, (ServicePort, Fragment)>, Claims) {
    let mut t = fixed();
    let mut claims = Claims::default();
    let mut frags = HashMap::new();
    for p in ports {
        let f = fragment(p, o);
        let id = p.id();
        claims.change(&id, &Fragment::default(), &f, None);
        for (name, c) in &f.chains {
            t.chains.insert(name.clone(), c.clone());
        }
        frags.insert(id, (p.clone(), f));
    }
    claims.fill(&mut t);
    (t, frags, claims)
}

/// The whole table these service ports want.
pub fn desired<'a>(ports: impl IntoIterator<Item = &'a ServicePort>, o: &Options) -> Table {
    assemble(ports, o).0
}
