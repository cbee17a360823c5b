//! The nftables ruleset, in kube-proxy's nftables-mode layout: a table of our own with a
//! verdict map from (service IP, protocol, port) to a chain per service port, which
//! picks an endpoint chain at random (`numgen random mod N`), which DNATs. NodePorts
//! match on the node's local addresses; services without endpoints are rejected. The
//! whole table is replaced in one `nft -f` transaction.

use crate::model::{hash, ServicePort};
use crate::Options;
use std::fmt::Write;

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

/// The `nft -f` input that (re)creates the table with these service ports.
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
    // Before DNAT (priority dstnat = -100): a service with no endpoints is refused.
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
    let (mut svc_ips, mut node_ports, mut no_ep, mut no_ep_np) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in ports {
        let proto = p.protocol.name();
        let addrs: Vec<_> = p.cluster_ip.iter().chain(&p.external_ips).collect();
        if p.endpoints.is_empty() {
            for a in &addrs {
                no_ep.push(format!("{a} . {proto} . {} : goto reject-chain", p.port));
            }
            if let Some(np) = p.node_port {
                no_ep_np.push(format!("{proto} . {np} : goto reject-chain"));
            }
            continue;
        }
        let svc = service_chain(p);
        for a in &addrs {
            svc_ips.push(format!("{a} . {proto} . {} : goto {svc}", p.port));
        }
        let _ = writeln!(s, "\tchain {svc} {{");
        if let (Some(cidr), Some(ip)) = (&o.cluster_cidr, p.cluster_ip) {
            let _ = writeln!(
                s,
                "\t\tip daddr {ip} {proto} dport {} ip saddr != {cidr} jump mark-for-masquerade",
                p.port
            );
        }
        let n = p.endpoints.len();
        let targets: Vec<String> = p
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| format!("{i} : goto {}", endpoint_chain(p, *ip, *port)))
            .collect();
        let _ = writeln!(
            s,
            "\t\tnumgen random mod {n} vmap {{ {} }}\n\t}}",
            targets.join(", ")
        );
        for (ip, port) in &p.endpoints {
            let _ = writeln!(
                s,
                "\tchain {} {{\n\t\tip saddr {ip} jump mark-for-masquerade\n\t\tmeta l4proto {proto} dnat to {ip}:{port}\n\t}}",
                endpoint_chain(p, *ip, *port)
            );
        }
        if let Some(np) = p.node_port {
            let ext = external_chain(p);
            node_ports.push(format!("{proto} . {np} : goto {ext}"));
            let _ = writeln!(
                s,
                "\tchain {ext} {{\n\t\tjump mark-for-masquerade\n\t\tgoto {svc}\n\t}}"
            );
        }
    }
    let map = |s: &mut String, name: &str, key: &str, elems: &[String]| {
        let _ = write!(s, "\tmap {name} {{\n\t\ttype {key} : verdict\n");
        if !elems.is_empty() {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
        }
        s.push_str("\t}\n");
    };
    let ip_key = "ipv4_addr . inet_proto . inet_service";
    let port_key = "inet_proto . inet_service";
    map(&mut s, "service-ips", ip_key, &svc_ips);
    map(&mut s, "service-nodeports", port_key, &node_ports);
    map(&mut s, "no-endpoint-services", ip_key, &no_ep);
    map(&mut s, "no-endpoint-nodeports", port_key, &no_ep_np);
    s.push_str("}\n");
    s
}

/// The `nft -f` input that removes the table.
pub fn cleanup(o: &Options) -> String {
    format!("add table ip {t}\ndelete table ip {t}\n", t = o.table)
}
