//! The cluster's names, as Kubernetes' DNS specification defines them
//! (kubernetes/dns docs/specification.md), built from Services and EndpointSlices:
//!
//! - a ClusterIP Service `S` in namespace `N`: `S.N.svc.DOMAIN` A/AAAA → its cluster
//!   IPs; each named port `P` over protocol `PR`: `_P._PR.S.N.svc.DOMAIN` SRV → port
//!   and `S.N.svc.DOMAIN`; a PTR for each cluster IP;
//! - a headless Service: `S.N.svc.DOMAIN` → the ready endpoints' addresses (all of them
//!   with publishNotReadyAddresses); an endpoint with a hostname `H` also answers at
//!   `H.S.N.svc.DOMAIN` (and its PTR); SRV per named port and endpoint, its target that
//!   hostname or the address written with dashes (`10-244-1-5.S.N.svc.DOMAIN`);
//! - an ExternalName Service: `S.N.svc.DOMAIN` CNAME → the external name;
//! - pods: `A-B-C-D.N.pod.DOMAIN` A → A.B.C.D (CoreDNS' `pods insecure`, kubeadm's
//!   default).
//!
//! A name in the domain with no records of the asked type is NOERROR with no answer
//! (also a name that only has names below it, such as `N.svc.DOMAIN`); one that does
//! not exist is NXDOMAIN; a name outside the domain (and a reverse name that is not a
//! cluster address) is for the upstream resolvers.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { port: u16, target: String },
    Cname(String),
    Ptr(String),
}

/// The record types a question can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qtype {
    A,
    Aaaa,
    Srv,
    Cname,
    Ptr,
    Any,
    Other,
}

impl Rdata {
    fn answers(&self, q: Qtype) -> bool {
        matches!(
            (q, self),
            (Qtype::Any, _)
                | (Qtype::A, Rdata::A(_))
                | (Qtype::Aaaa, Rdata::Aaaa(_))
                | (Qtype::Srv, Rdata::Srv { .. })
                | (Qtype::Cname, Rdata::Cname(_))
                | (Qtype::Ptr, Rdata::Ptr(_))
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Answers (owner name, data), and for SRV answers the addresses of their targets.
    Found {
        answers: Vec<(String, Rdata)>,
        additional: Vec<(String, Rdata)>,
    },
    /// The name exists; nothing of this type.
    NoData,
    NxDomain,
    /// Not ours: ask the upstream resolvers.
    Elsewhere,
}

#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    records: HashMap<String, Vec<Rdata>>,
    /// Every name that has names below it in the domain (empty non-terminals).
    parents: HashSet<String>,
}

fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

fn address(ip: IpAddr) -> Rdata {
    match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    }
}

/// A question's name as the zone holds names: lower case, no final dot.
pub fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn build(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], domain: &str) -> Zone {
        let mut z = Zone {
            domain: normal(domain),
            ..Default::default()
        };
        // Slices by (namespace, service name).
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let (Some(ns), Some(svc)) = (
                s.metadata.namespace.as_deref(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name")),
            ) else {
                continue;
            };
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
        for svc in services {
            let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let fqdn = format!("{name}.{ns}.svc.{}", z.domain);
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(ext) = spec.external_name.as_deref().filter(|e| !e.is_empty()) {
                    z.add(&fqdn, Rdata::Cname(normal(ext)));
                }
                continue;
            }
            let ips: Vec<IpAddr> = match &spec.cluster_ips {
                Some(ips) if !ips.is_empty() => ips.clone(),
                _ => spec.cluster_ip.clone().into_iter().collect(),
            }
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                if ips.is_empty() {
                    continue; // no address allocated yet
                }
                for ip in &ips {
                    z.add(&fqdn, address(*ip));
                    z.add_reverse(*ip, &fqdn);
                }
                for p in spec.ports.iter().flatten() {
                    if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                        let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                        let srv = format!("_{pn}._{proto}.{fqdn}");
                        z.add(
                            &srv,
                            Rdata::Srv {
                                port: p.port as u16,
                                target: fqdn.clone(),
                            },
                        );
                    }
                }
                z.mark_name(&fqdn);
                continue;
            }
            let not_ready_too = spec.publish_not_ready_addresses == Some(true);
            let mut seen = HashSet::new();
            for slice in by_service.get(&(ns, name)).into_iter().flatten() {
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                    if !ready && !not_ready_too {
                        continue;
                    }
                    for a in &ep.addresses {
                        let Ok(ip) = a.parse::<IpAddr>() else {
                            continue;
                        };
                        if !seen.insert(ip) {
                            continue;
                        }
                        z.add(&fqdn, address(ip));
                        let target = match ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                            Some(h) => {
                                let host = format!("{h}.{fqdn}");
                                z.add_reverse(ip, &host);
                                host
                            }
                            None => format!("{}.{fqdn}", dashed(ip)),
                        };
                        z.add(&target, address(ip));
                        for p in slice.ports.iter().flatten() {
                            let (Some(pn), Some(port)) =
                                (p.name.as_deref().filter(|n| !n.is_empty()), p.port)
                            else {
                                continue;
                            };
                            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            z.add(
                                &format!("_{pn}._{proto}.{fqdn}"),
                                Rdata::Srv {
                                    port: port as u16,
                                    target: target.clone(),
                                },
                            );
                        }
                    }
                }
            }
            // A headless Service with no ready endpoint still exists (NOERROR, empty).
            z.mark_name(&fqdn);
        }
        z
    }

    fn add(&mut self, name: &str, r: Rdata) {
        let rs = self.records.entry(name.to_string()).or_default();
        if !rs.contains(&r) {
            rs.push(r);
        }
        self.mark_name(name);
    }

    fn add_reverse(&mut self, ip: IpAddr, name: &str) {
        self.records
            .entry(reverse(ip))
            .or_default()
            .push(Rdata::Ptr(name.to_string()));
    }

    /// `name` exists: so does every name between it and the domain.
    fn mark_name(&mut self, name: &str) {
        self.records.entry(name.to_string()).or_default();
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if !self.parents.insert(parent.to_string()) || parent == self.domain {
                break;
            }
            rest = parent;
        }
    }

    fn in_domain(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(&self.domain)
                .is_some_and(|p| p.ends_with('.'))
    }

    pub fn lookup(&self, name: &str, q: Qtype) -> Lookup {
        let name = normal(name);
        if name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") {
            return match self.records.get(&name) {
                Some(rs) => self.found(&name, rs, q),
                None => Lookup::Elsewhere,
            };
        }
        if !self.in_domain(&name) {
            return Lookup::Elsewhere;
        }
        if let Some(rs) = self.records.get(&name) {
            return self.found(&name, rs, q);
        }
        if let Some(ip) = self.pod_address(&name) {
            return match q {
                Qtype::A | Qtype::Any => Lookup::Found {
                    answers: vec![(name, Rdata::A(ip))],
                    additional: Vec::new(),
                },
                _ => Lookup::NoData,
            };
        }
        if self.parents.contains(&name) || name == self.domain {
            return Lookup::NoData;
        }
        Lookup::NxDomain
    }

    /// `A-B-C-D.NAMESPACE.pod.DOMAIN`.
    fn pod_address(&self, name: &str) -> Option<Ipv4Addr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (dashed, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        dashed.replace('-', ".").parse().ok()
    }

    fn found(&self, name: &str, rs: &[Rdata], q: Qtype) -> Lookup {
        // A CNAME answers every question about its name.
        let answers: Vec<(String, Rdata)> = match rs.iter().find(|r| matches!(r, Rdata::Cname(_))) {
            Some(c) => vec![(name.to_string(), c.clone())],
            None => rs
                .iter()
                .filter(|r| r.answers(q))
                .map(|r| (name.to_string(), r.clone()))
                .collect(),
        };
        if answers.is_empty() {
            return Lookup::NoData;
        }
        let additional = answers
            .iter()
            .filter_map(|(_, r)| match r {
                Rdata::Srv { target, .. } => Some(target),
                _ => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .flat_map(|t| {
                self.records
                    .get(t)
                    .into_iter()
                    .flatten()
                    .filter(|r| matches!(r, Rdata::A(_) | Rdata::Aaaa(_)))
                    .map(move |r| (t.clone(), r.clone()))
            })
            .collect();
        Lookup::Found {
            answers,
            additional,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let svc = |v: serde_json::Value| Arc::new(serde_json::from_value::<Service>(v).unwrap());
        let services = vec![
            svc(json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(
                json!({"metadata": {"name": "empty", "namespace": "shop"}, "spec": {"clusterIP": "None"}}),
            ),
            svc(json!({"metadata": {"name": "ext", "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": "db.example.org."}})),
        ];
        let slice = serde_json::from_value::<EndpointSlice>(json!({
            "metadata": {"name": "db-x", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false}}
            ]}))
        .unwrap();
        Zone::build(&services, &[Arc::new(slice)], "cluster.local")
    }

    fn answers(l: Lookup) -> Vec<(String, Rdata)> {
        match l {
            Lookup::Found { answers, .. } => answers,
            other => panic!("no answers: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services_answer_their_address_srv_and_ptr() {
        let z = zone();
        let a = answers(z.lookup("Web.Shop.svc.cluster.local.", Qtype::A));
        assert_eq!(
            a,
            [(
                "web.shop.svc.cluster.local".into(),
                Rdata::A("10.96.3.4".parse().unwrap())
            )]
        );
        let srv = z.lookup("_http._tcp.web.shop.svc.cluster.local", Qtype::Srv);
        let Lookup::Found {
            answers: srv_answers,
            additional,
        } = srv
        else {
            panic!("{srv:?}")
        };
        assert_eq!(
            srv_answers[0].1,
            Rdata::Srv {
                port: 80,
                target: "web.shop.svc.cluster.local".into()
            }
        );
        assert_eq!(additional.len(), 1, "the target's address: {additional:?}");
        // Unnamed ports have no SRV record.
        assert_eq!(
            z.lookup("_81._tcp.web.shop.svc.cluster.local", Qtype::Srv),
            Lookup::NxDomain
        );
        let ptr = answers(z.lookup("4.3.96.10.in-addr.arpa.", Qtype::Ptr));
        assert_eq!(ptr[0].1, Rdata::Ptr("web.shop.svc.cluster.local".into()));
        // The name exists, without AAAA: NOERROR, no answer.
        assert_eq!(
            z.lookup("web.shop.svc.cluster.local", Qtype::Aaaa),
            Lookup::NoData
        );
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_their_hostnames() {
        let z = zone();
        let mut a: Vec<String> = answers(z.lookup("db.shop.svc.cluster.local", Qtype::A))
            .into_iter()
            .map(|(_, r)| format!("{r:?}"))
            .collect();
        a.sort();
        assert_eq!(
            a,
            ["A(10.244.1.5)", "A(10.244.2.6)"],
            "not-ready 10.244.2.7 left out"
        );
        let host = answers(z.lookup("db-0.db.shop.svc.cluster.local", Qtype::A));
        assert_eq!(host[0].1, Rdata::A("10.244.1.5".parse().unwrap()));
        let mut targets: Vec<String> =
            answers(z.lookup("_pg._tcp.db.shop.svc.cluster.local", Qtype::Srv))
                .into_iter()
                .map(|(_, r)| match r {
                    Rdata::Srv { port: 5432, target } => target,
                    other => panic!("{other:?}"),
                })
                .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                "10-244-2-6.db.shop.svc.cluster.local",
                "db-0.db.shop.svc.cluster.local"
            ]
        );
        // A headless Service without ready endpoints exists, with no address.
        assert_eq!(
            z.lookup("empty.shop.svc.cluster.local", Qtype::A),
            Lookup::NoData
        );
    }

    #[test]
    fn external_names_pods_missing_names_and_outside_names() {
        let z = zone();
        assert_eq!(
            answers(z.lookup("ext.shop.svc.cluster.local", Qtype::A)),
            [(
                "ext.shop.svc.cluster.local".into(),
                Rdata::Cname("db.example.org".into())
            )]
        );
        assert_eq!(
            answers(z.lookup("10-244-1-9.shop.pod.cluster.local", Qtype::A))[0].1,
            Rdata::A("10.244.1.9".parse().unwrap())
        );
        assert_eq!(
            z.lookup("nope.shop.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
        // Names with names below them exist.
        assert_eq!(z.lookup("shop.svc.cluster.local", Qtype::A), Lookup::NoData);
        assert_eq!(z.lookup("svc.cluster.local", Qtype::A), Lookup::NoData);
        assert_eq!(z.lookup("example.org", Qtype::A), Lookup::Elsewhere);
        assert_eq!(
            z.lookup("9.9.9.9.in-addr.arpa", Qtype::Ptr),
            Lookup::Elsewhere
        );
        // A name that merely ends like the domain is not in it.
        assert_eq!(z.lookup("notcluster.local", Qtype::A), Lookup::Elsewhere);
    }
}
