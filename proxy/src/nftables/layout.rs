//! What the table holds, as data: a fixed part (hooks, masquerading, the shared maps)
//! and one fragment per service port.
//!
//! The layout keeps the kernel's work per transaction proportional to what changes.
//! nf_tables finds sets by walking the table's list of them, names anonymous sets by
//! scanning that list, checks every element added to a map against every rule that
//! reads the map, and, on any commit that adds a jump, a verdict element or a DNAT
//! rule, validates every rule reachable from the base chains (about 25 ms at 10,000
//! services with a chain per service). So a service port is, as far as possible, map
//! elements only:
//! - one verdict map from (address, protocol, port) to the pick chain for the port's
//!   number of endpoints, and one from (protocol, node port) likewise;
//! - a pick chain per endpoint count n in use, with one rule: DNAT to the element
//!   (address, protocol, port, `numgen random mod n`) of one shared endpoint map (one
//!   per key shape), so changing an endpoint is replacing one data element, which the
//!   kernel neither validates nor checks against many rules;
//! - masquerading decided by fixed rules over shared sets (clients outside the cluster
//!   CIDR, node ports), and hairpin traffic (a pod reaching itself through its Service)
//!   by one rule looking up (source, destination) after DNAT in one shared set.
//!
//! Service ports with session affinity keep a chain of their own: the endpoint is picked
//! by a cascade of rules (rule i of n takes `numgen random mod (n-i)` == 0, uniform
//! overall, as iptables' statistic cascade), each remembering its client in one shared
//! dynamic map (client, service address, port) → endpoint, read by one rule.

use super::service_rule::{parse_cidr, ServiceRule};
use super::table::{key_of, Edits};
use super::table::{Chain, Rule, Set, Table};
use crate::model::{hash, ServicePort};
use crate::Options;
// Tens of thousands of keys are hashed per full sync: a fast hasher (the keys are our
// own, not an attacker's).
use foldhash::HashMap;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const HAIRPIN: &str = "hairpin";
pub const AFFINITY: &str = "affinity";
pub const ADDRESS_ENDPOINTS: &str = "address-endpoints";
pub const NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
pub const MASQUERADE_OUTSIDE: &str = "masquerade-outside";
pub const NODEPORTS_MASQUERADE: &str = "nodeports-masquerade";

/// The label of the fixed part's rules.
const FIXED: &str = "skiff-proxy";

/// What one service port adds to the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    pub chains: Vec<(String, Chain)>,
    /// (set, element)
    pub elements: Vec<(&'static str, String)>,
    /// The shared pick chains its elements lead to: (node port?, endpoint count).
    pub picks: Vec<(bool, u32)>,
}

/// The pick chain for `of` endpoints, keyed by address or by node port.
pub fn pick_chain(nodeport: bool, of: u32) -> String {
    let by = if nodeport { "nodeport" } else { "address" };
    format!("pick-{by}-{of}")
}

/// A pick chain: its one rule.
pub fn pick_chain_body(nodeport: bool, of: u32) -> Chain {
    Chain {
        header: None,
        rules: vec![Rule::service(FIXED, ServiceRule::Pick { nodeport, of })],
    }
}

/// Index `i` of a service port's endpoints, as nft prints a mark.
fn index(i: usize) -> String {
    format!("0x{i:08x}")
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

/// Who claims each element key. Service ports share elements (two ports of one
/// endpoint address claim the same hairpin element) and, with bad input, collide (two
/// Services given the same external IP and port): a key holds one element, the claim
/// of the smallest service port id, whichever order the claims came in, so a sync and
/// a read-back agree. Losing a claim hands the key to the next claimant.
/// A key's claims: (service port id, element), sorted by id.
type Claimants = Vec<(std::sync::Arc<str>, String)>;

#[derive(Debug, Default)]
pub struct Claims {
    /// (set, key) → (service port id, element), sorted by id. Almost every key has
    /// one claimant: a short vector, not a map (a full sync makes ~10 per service).
    keys: HashMap<(&'static str, String), Claimants>,
}

/// The element a key held before a sync touched it: (set, key) → element.
pub type Touched = BTreeMap<(&'static str, String), Option<String>>;

impl Claims {
    fn winner(&self, k: &(&'static str, String)) -> Option<String> {
        self.keys
            .get(k)
            .and_then(|c| c.first())
            .map(|(_, e)| e.clone())
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
                c.retain(|(claimant, _)| &**claimant != id);
                if c.is_empty() {
                    self.keys.remove(&k);
                }
            }
        }
        // One shared copy of the id for all of the port's claims.
        let claimant: std::sync::Arc<str> = id.into();
        for (set, e) in &new.elements {
            let claims = self.keys.entry((*set, key_of(e).to_string())).or_default();
            if claims.iter().any(|(_, other)| other != e) {
                tracing::warn!(
                    set,
                    element = e.as_str(),
                    service_port = id,
                    "another service port claims this key; the smallest id keeps it"
                );
            }
            match claims.binary_search_by(|(c, _)| (**c).cmp(id)) {
                Ok(i) => claims[i].1 = e.clone(),
                Err(i) => claims.insert(i, (claimant.clone(), e.clone())),
            }
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
        // Gathered and sorted first: a set built from a sorted list is built in one
        // pass, where inserting 100,000 elements one by one compares strings all along.
        let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (k, c) in self.keys.iter() {
            if let Some((_, e)) = c.first() {
                by_set.entry(k.0).or_default().push(e.clone());
            }
        }
        for (name, mut elements) in by_set {
            if let Some(set) = t.sets.get_mut(name) {
                elements.sort_unstable();
                elements.extend(std::mem::take(&mut set.elements));
                set.elements = elements.into_iter().collect();
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
    // The elements that lead from a service port's addresses to its rules name it.
    let l = label(p);
    if p.endpoints.is_empty() {
        for a in &addrs {
            f.elements.push((
                NO_ENDPOINT_SERVICES,
                format!(
                    "{a} . {proto} . {} comment \"{l}\" : goto reject-chain",
                    p.port
                ),
            ));
        }
        if let Some(np) = p.node_port {
            f.elements.push((
                NO_ENDPOINT_NODEPORTS,
                format!("{proto} . {np} comment \"{l}\" : goto reject-chain"),
            ));
        }
        return f;
    }
    let mut addresses: Vec<Ipv4Addr> = p.endpoints.iter().map(|(ip, _)| *ip).collect();
    addresses.dedup();
    for ip in addresses {
        f.elements.push((HAIRPIN, hairpin(ip)));
    }
    // A /0 cluster CIDR leaves no one outside it.
    let outside = o
        .cluster_cidr
        .as_deref()
        .and_then(parse_cidr)
        .is_some_and(|c| c.1 > 0);
    if let (true, Some(ip)) = (outside, p.cluster_ip) {
        f.elements
            .push((MASQUERADE_OUTSIDE, format!("{ip} . {proto} . {}", p.port)));
    }
    let cluster = if p.internal_local {
        &p.local_endpoints
    } else {
        &p.endpoints
    };
    if p.affinity_seconds.is_some() {
        affinity_chains(p, cluster, &addrs, &mut f);
        return f;
    }
    for a in &addrs {
        let key = format!("{a} . {proto} . {}", p.port);
        let to = pick(&mut f, false, cluster.len());
        f.elements
            .push((SERVICE_IPS, format!("{key} comment \"{l}\" : {to}")));
        for (i, (ip, port)) in cluster.iter().enumerate() {
            f.elements.push((
                ADDRESS_ENDPOINTS,
                format!("{key} . {} : {ip} . {port}", index(i)),
            ));
        }
    }
    if let Some(np) = p.node_port {
        let key = format!("{proto} . {np}");
        // Only this node's endpoints, and the client's address kept (no masquerade).
        let eps = if p.external_local {
            &p.local_endpoints
        } else {
            f.elements.push((NODEPORTS_MASQUERADE, key.clone()));
            cluster
        };
        let to = pick(&mut f, true, eps.len());
        f.elements
            .push((SERVICE_NODEPORTS, format!("{key} : {to}")));
        for (i, (ip, port)) in eps.iter().enumerate() {
            f.elements.push((
                NODEPORT_ENDPOINTS,
                format!("{key} . {} : {ip} . {port}", index(i)),
            ));
        }
    }
    f
}

/// The verdict for a key with `n` endpoints: the pick chain for n (noted in the
/// fragment), or drop when there is none to choose (a local traffic policy and no
/// endpoint on this node).
fn pick(f: &mut Fragment, nodeport: bool, n: usize) -> String {
    if n == 0 {
        return "drop".into();
    }
    let n = n as u32;
    if !f.picks.contains(&(nodeport, n)) {
        f.picks.push((nodeport, n));
    }
    format!("goto {}", pick_chain(nodeport, n))
}

/// A service port with session affinity: a chain of its own (and one for its node
/// port), whose rules pick the endpoint and remember the client.
fn affinity_chains(
    p: &ServicePort,
    cluster: &[(Ipv4Addr, u16)],
    addrs: &[Ipv4Addr],
    f: &mut Fragment,
) {
    let proto = p.protocol.name();
    let l = label(p);
    let svc = service_chain(p);
    for a in addrs {
        f.elements.push((
            SERVICE_IPS,
            format!("{a} . {proto} . {} comment \"{l}\" : goto {svc}", p.port),
        ));
    }
    f.chains.push((
        svc.clone(),
        Chain {
            header: None,
            rules: cascade(p, cluster, &l),
        },
    ));
    if let Some(np) = p.node_port {
        let ext = external_chain(p);
        f.elements.push((
            SERVICE_NODEPORTS,
            format!("{proto} . {np} comment \"{l}\" : goto {ext}"),
        ));
        let rules = if p.external_local {
            // Only this node's endpoints, and the client's address kept (no masquerade).
            cascade(p, &p.local_endpoints, &l)
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
}

/// Rules choosing one of `eps`: a client seen lately goes back to its endpoint, the
/// rest by the cascade; none to choose: drop.
fn cascade(p: &ServicePort, eps: &[(Ipv4Addr, u16)], l: &str) -> Vec<Rule> {
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
pub fn fixed(o: &Options) -> Table {
    let mut t = Table::default();
    let ip_key = "ipv4_addr . inet_proto . inet_service";
    let port_key = "inet_proto . inet_service";
    // The endpoint index is typed as a mark: a 32-bit number in host order, which is
    // what numgen yields (nft's own `integer` has no fixed size in a concatenation).
    let endpoint = "ipv4_addr . inet_service";
    for (name, decl) in [
        (SERVICE_IPS, format!("type {ip_key} : verdict;")),
        (SERVICE_NODEPORTS, format!("type {port_key} : verdict;")),
        (NO_ENDPOINT_SERVICES, format!("type {ip_key} : verdict;")),
        (NO_ENDPOINT_NODEPORTS, format!("type {port_key} : verdict;")),
        (
            ADDRESS_ENDPOINTS,
            format!("type {ip_key} . mark : {endpoint};"),
        ),
        (
            NODEPORT_ENDPOINTS,
            format!("type {port_key} . mark : {endpoint};"),
        ),
        (MASQUERADE_OUTSIDE, format!("type {ip_key};")),
        (NODEPORTS_MASQUERADE, format!("type {port_key};")),
    ] {
        t.sets.insert(
            name.into(),
            Set {
                decl,
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
    let mut services = Vec::new();
    // Clients outside the cluster CIDR reaching a ClusterIP are masqueraded, so the
    // endpoint's reply comes back through this node (a /0 CIDR leaves no one outside).
    if let Some((ip, len)) = o
        .cluster_cidr
        .as_deref()
        .and_then(parse_cidr)
        .filter(|c| c.1 > 0)
    {
        services.push(format!(
            "ip saddr != {ip}/{len} ip daddr . meta l4proto . th dport @{MASQUERADE_OUTSIDE} jump mark-for-masquerade"
        ));
    }
    services.push(format!(
        "ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"
    ));
    services.push(format!(
        "{local} meta l4proto . th dport @{NODEPORTS_MASQUERADE} jump mark-for-masquerade"
    ));
    services.push(format!(
        "{local} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
    ));
    let services: Vec<&str> = services.iter().map(String::as_str).collect();
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
        ("services", chain(&services)),
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
    let mut t = fixed(o);
    let mut claims = Claims::default();
    let mut frags = HashMap::default();
    for p in ports {
        let f = fragment(p, o);
        let id = p.id();
        claims.change(&id, &Fragment::default(), &f, None);
        for (name, c) in &f.chains {
            t.chains.insert(name.clone(), c.clone());
        }
        for (nodeport, n) in &f.picks {
            t.chains
                .entry(pick_chain(*nodeport, *n))
                .or_insert_with(|| pick_chain_body(*nodeport, *n));
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
