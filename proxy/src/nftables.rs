//! The nftables ruleset, in kube-proxy's nftables-mode layout: a table of our own with a
//! verdict map from (service IP, protocol, port) to a chain per service port, which
//! picks an endpoint chain at random (`numgen random mod N`), which DNATs. NodePorts
//! match on the node's local addresses; services without endpoints are rejected.
//!
//! The first sync (or one after a failure) replaces the whole table in one `nft -f`
//! transaction; later ones touch only the service ports that changed (their map
//! elements and chains), also in one transaction, so a sync costs O(what changed).

use crate::model::{hash, ServicePort};
use crate::Options;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Service ports by id: what a table was last made from.
pub type Ports = BTreeMap<String, ServicePort>;

pub fn by_id(ports: &[ServicePort]) -> Ports {
    ports.iter().map(|p| (p.id(), p.clone())).collect()
}

fn service_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("service-{}-{id}", hash(&id))
}

fn external_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("external-{}-{id}", hash(&id))
}

fn endpoint_chain(p: &ServicePort, ip: std::net::Ipv4Addr, port: u16) -> String {
    let id = format!("{}__{ip}/{port}", p.id());
    format!("endpoint-{}-{id}", hash(&id))
}

fn affinity_set(p: &ServicePort, ip: std::net::Ipv4Addr, port: u16) -> String {
    let id = format!("{}__{ip}/{port}", p.id());
    format!("affinity-{}-{id}", hash(&id))
}

/// The affinity sets of a service port: (name, timeout seconds).
fn sets(p: &ServicePort) -> Vec<(String, u32)> {
    match p.affinity_seconds {
        Some(t) => p
            .endpoints
            .iter()
            .map(|(ip, port)| (affinity_set(p, *ip, *port), t))
            .collect(),
        None => Vec::new(),
    }
}

fn set_body(timeout: u32) -> String {
    format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;")
}

/// A map element of a service port: (map, key, verdict).
type Element = (&'static str, String, String);

fn elements(p: &ServicePort) -> Vec<Element> {
    let proto = p.protocol.name();
    let addrs = p.cluster_ip.iter().chain(&p.external_ips);
    let mut out = Vec::new();
    if p.endpoints.is_empty() {
        for a in addrs {
            out.push((
                "no-endpoint-services",
                format!("{a} . {proto} . {}", p.port),
                "goto reject-chain".to_string(),
            ));
        }
        if let Some(np) = p.node_port {
            out.push((
                "no-endpoint-nodeports",
                format!("{proto} . {np}"),
                "goto reject-chain".to_string(),
            ));
        }
    } else {
        for a in addrs {
            out.push((
                "service-ips",
                format!("{a} . {proto} . {}", p.port),
                format!("goto {}", service_chain(p)),
            ));
        }
        if let Some(np) = p.node_port {
            out.push((
                "service-nodeports",
                format!("{proto} . {np}"),
                format!("goto {}", external_chain(p)),
            ));
        }
    }
    out
}

/// The chains of a service port and their rules (none without endpoints).
fn chains(p: &ServicePort, o: &Options) -> Vec<(String, Vec<String>)> {
    if p.endpoints.is_empty() {
        return Vec::new();
    }
    let proto = p.protocol.name();
    let svc = service_chain(p);
    let mut rules = Vec::new();
    if let (Some(cidr), Some(ip)) = (&o.cluster_cidr, p.cluster_ip) {
        rules.push(format!(
            "ip daddr {ip} {proto} dport {} ip saddr != {cidr} jump mark-for-masquerade",
            p.port
        ));
    }
    let cluster = if p.internal_local {
        &p.local_endpoints
    } else {
        &p.endpoints
    };
    rules.extend(pick(p, cluster));
    let mut out = vec![(svc.clone(), rules)];
    for (ip, port) in &p.endpoints {
        let mut rules = vec![format!("ip saddr {ip} jump mark-for-masquerade")];
        if p.affinity_seconds.is_some() {
            rules.push(format!(
                "update @{} {{ ip saddr }}",
                affinity_set(p, *ip, *port)
            ));
        }
        rules.push(format!("meta l4proto {proto} dnat to {ip}:{port}"));
        out.push((endpoint_chain(p, *ip, *port), rules));
    }
    if p.node_port.is_some() {
        let rules = if p.external_local {
            // Only this node's endpoints, and the client's address kept (no masquerade).
            pick(p, &p.local_endpoints)
        } else {
            vec!["jump mark-for-masquerade".into(), format!("goto {svc}")]
        };
        out.push((external_chain(p), rules));
    }
    out
}

/// Rules choosing one of `eps` (affinity first, then at random); none to choose: drop.
fn pick(p: &ServicePort, eps: &[(std::net::Ipv4Addr, u16)]) -> Vec<String> {
    if eps.is_empty() {
        return vec!["drop".into()];
    }
    let mut rules = Vec::new();
    // A client seen lately goes back to its endpoint.
    if p.affinity_seconds.is_some() {
        for (ip, port) in eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(p, *ip, *port),
                endpoint_chain(p, *ip, *port)
            ));
        }
    }
    let targets: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, (ip, port))| format!("{i} : goto {}", endpoint_chain(p, *ip, *port)))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        targets.join(", ")
    ));
    rules
}

/// The `nft -f` input that (re)creates the whole table with these service ports.
pub fn render(ports: &[ServicePort], o: &Options) -> String {
    let t = &o.table;
    let mut s = String::new();
    // Create-then-delete makes the delete safe when the table does not exist yet; the
    // new table follows in the same transaction.
    let _ = writeln!(s, "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
    s.push_str(
        "\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark | 0x4000\n\t}\n\
         \tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n\
         \tchain nat-prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n\t\tjump masquerading\n\t}\n\
         \tchain reject-chain {\n\t\treject\n\t}\n",
    );
    // Before DNAT (priority -100): a service with no endpoints is refused.
    for hook in ["input", "forward", "output"] {
        let _ = writeln!(
            s,
            "\tchain filter-{hook} {{\n\t\ttype filter hook {hook} priority -110; policy accept;\n\t\tct state new jump endpoints-check\n\t}}"
        );
    }
    let local = "fib daddr type local ip daddr != 127.0.0.0/8";
    let _ = writeln!(
        s,
        "\tchain endpoints-check {{\n\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t\t{local} meta l4proto . th dport vmap @no-endpoint-nodeports\n\t}}"
    );
    let _ = writeln!(
        s,
        "\tchain services {{\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\t{local} meta l4proto . th dport vmap @service-nodeports\n\t}}"
    );
    let mut maps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in ports {
        for (name, timeout) in sets(p) {
            let _ = writeln!(s, "\tset {name} {{ {} }}", set_body(timeout));
        }
        for (name, rules) in chains(p, o) {
            let _ = writeln!(s, "\tchain {name} {{");
            for r in rules {
                let _ = writeln!(s, "\t\t{r}");
            }
            s.push_str("\t}\n");
        }
        for (map, key, verdict) in elements(p) {
            maps.entry(map)
                .or_default()
                .push(format!("{key} : {verdict}"));
        }
    }
    let ip_key = "ipv4_addr . inet_proto . inet_service";
    let port_key = "inet_proto . inet_service";
    for (name, key) in [
        ("service-ips", ip_key),
        ("service-nodeports", port_key),
        ("no-endpoint-services", ip_key),
        ("no-endpoint-nodeports", port_key),
    ] {
        let _ = write!(s, "\tmap {name} {{\n\t\ttype {key} : verdict\n");
        if let Some(elems) = maps.get(name).filter(|e| !e.is_empty()) {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// The `nft -f` input that brings a table made from `old` to `new`, touching only the
/// service ports that differ; empty when nothing does.
pub fn render_update(old: &Ports, new: &Ports, o: &Options) -> String {
    let t = &o.table;
    let ids: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let (mut del_elems, mut flushes, mut del_chains, mut add_chains, mut add_elems) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut del_sets = Vec::new();
    for id in ids {
        let (before, after) = (old.get(id), new.get(id));
        if before == after {
            continue;
        }
        let old_chains: Vec<(String, Vec<String>)> =
            before.map(|p| chains(p, o)).unwrap_or_default();
        let new_chains: Vec<(String, Vec<String>)> =
            after.map(|p| chains(p, o)).unwrap_or_default();
        for (map, key, _) in before.map(elements).unwrap_or_default() {
            del_elems.push(format!("delete element ip {t} {map} {{ {key} }}"));
        }
        // Flushed first, so no rule refers to a chain that goes.
        for (name, _) in &old_chains {
            flushes.push(format!("flush chain ip {t} {name}"));
            if !new_chains.iter().any(|(n, _)| n == name) {
                del_chains.push(format!("delete chain ip {t} {name}"));
            }
        }
        let (old_sets, new_sets) = (
            before.map(sets).unwrap_or_default(),
            after.map(sets).unwrap_or_default(),
        );
        for set in &old_sets {
            if !new_sets.contains(set) {
                del_sets.push(format!("delete set ip {t} {}", set.0));
            }
        }
        for set in &new_sets {
            if !old_sets.contains(set) {
                add_chains.push(format!(
                    "add set ip {t} {} {{ {} }}",
                    set.0,
                    set_body(set.1)
                ));
            }
        }
        for (name, _) in &new_chains {
            if !old_chains.iter().any(|(n, _)| n == name) {
                add_chains.push(format!("add chain ip {t} {name}"));
            }
        }
        for (name, rules) in &new_chains {
            for r in rules {
                add_chains.push(format!("add rule ip {t} {name} {r}"));
            }
        }
        for (map, key, verdict) in after.map(elements).unwrap_or_default() {
            add_elems.push(format!("add element ip {t} {map} {{ {key} : {verdict} }}"));
        }
    }
    let mut s = String::new();
    for l in del_elems
        .iter()
        .chain(&flushes)
        .chain(&del_chains)
        .chain(&del_sets)
        .chain(&add_chains)
        .chain(&add_elems)
    {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The `nft -f` input that removes the table.
pub fn cleanup(o: &Options) -> String {
    format!("add table ip {t}\ndelete table ip {t}\n", t = o.table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    fn port(name: &str, ip: &str, eps: &[&str], node_port: Option<u16>) -> ServicePort {
        ServicePort {
            namespace: "ns".into(),
            name: name.into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            cluster_ip: Some(ip.parse().unwrap()),
            external_ips: Vec::new(),
            port: 80,
            node_port,
            affinity_seconds: None,
            local_endpoints: Vec::new(),
            external_local: false,
            internal_local: false,
            endpoints: eps.iter().map(|e| (e.parse().unwrap(), 8080)).collect(),
        }
    }

    #[test]
    fn updates_touch_only_what_changed() {
        let o = Options::default();
        let a = port("a", "10.96.0.1", &["10.1.0.1"], None);
        let b = port("b", "10.96.0.2", &["10.1.0.2", "10.1.0.3"], Some(30001));
        let old = by_id(&[a.clone(), b.clone()]);
        assert_eq!(render_update(&old, &old, &o), "");
        // b loses an endpoint: only b's chains and elements are touched.
        let b2 = port("b", "10.96.0.2", &["10.1.0.2"], Some(30001));
        let new = by_id(&[a.clone(), b2.clone()]);
        let u = render_update(&old, &new, &o);
        assert!(!u.contains("ns/a/"), "{u}");
        assert!(
            u.contains("delete chain ip skiff-proxy endpoint-") && u.contains("10.1.0.3/8080"),
            "{u}"
        );
        assert!(u.contains("numgen random mod 1 vmap"), "{u}");
        let del = u.find("delete element").unwrap();
        let add = u.find("add element").unwrap();
        assert!(
            del < u.find("flush chain").unwrap() && u.rfind("add rule").unwrap() < add,
            "{u}"
        );
        // a loses all endpoints: it moves to the reject map; its chains go.
        let a2 = port("a", "10.96.0.1", &[], None);
        let u = render_update(&new, &by_id(&[a2, b2]), &o);
        assert!(u.contains("add element ip skiff-proxy no-endpoint-services { 10.96.0.1 . tcp . 80 : goto reject-chain }"), "{u}");
        assert!(
            u.contains("delete element ip skiff-proxy service-ips { 10.96.0.1 . tcp . 80 }"),
            "{u}"
        );
        assert!(!u.contains("ns/b/"), "{u}");
    }
}
