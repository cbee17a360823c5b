//! What the rules are made from: one entry per service port, with its virtual
//! addresses and the ready endpoints from the Service's EndpointSlices.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Protocol {
        match s {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name in the Service ("" for a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Option<Ipv4Addr>,
    pub external_ips: Vec<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// sessionAffinity ClientIP: a client keeps its endpoint for this many seconds.
    pub affinity_seconds: Option<u32>,
    /// Ready endpoints (address, port), sorted.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// The ones on this node (a subset of `endpoints`).
    pub local_endpoints: Vec<(Ipv4Addr, u16)>,
    /// externalTrafficPolicy Local: NodePort traffic goes only to local endpoints and
    /// keeps its source address.
    pub external_local: bool,
    /// internalTrafficPolicy Local: cluster traffic goes only to local endpoints.
    pub internal_local: bool,
}

impl ServicePort {
    /// `ns/name/proto/port`, as kube-proxy names a service port.
    pub fn id(&self) -> String {
        let mut s = String::new();
        self.write_id(&mut s);
        s
    }

    /// `namespace/name/protocol/port name` (`p<port>` for an unnamed port), appended.
    pub fn write_id(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "{}/{}/{}/",
            self.namespace,
            self.name,
            self.protocol.name()
        );
        if self.port_name.is_empty() {
            let _ = write!(out, "p{}", self.port);
        } else {
            out.push_str(&self.port_name);
        }
    }
}

/// A short stable hash for chain names (8 base32 characters, as kube-proxy's).
pub fn hash(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = Sha256::digest(s.as_bytes());
    let mut bits: u64 = 0;
    for b in &d[..5] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..8)
        .map(|i| ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char)
        .collect()
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// Service ports and their endpoints; `node` is this node's name (for the Local traffic
/// policies). Services without a cluster IP (headless) and ExternalName services get no
/// rules.
pub fn build(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    node: Option<&str>,
) -> Vec<ServicePort> {
    // Slices by (namespace, service), so each service finds its own at once.
    let mut by_service: std::collections::HashMap<(&str, &str), Vec<&Arc<EndpointSlice>>> =
        std::collections::HashMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        by_service.entry((ns, svc.as_str())).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = spec.cluster_ip.as_deref().and_then(ipv4);
        let external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| ipv4(s))
            .collect();
        if cluster_ip.is_none() && external_ips.is_empty() {
            continue;
        }
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map_or(10800, |t| t.clamp(1, 86400) as u32)
        });
        let ns = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let own: &[&Arc<EndpointSlice>] = by_service
            .get(&(ns.as_str(), name.as_str()))
            .map_or(&[], |v| v.as_slice());
        for p in spec.ports.iter().flatten() {
            let protocol = Protocol::parse(p.protocol.as_deref());
            let port_name = p.name.clone().unwrap_or_default();
            let mut endpoints: Vec<(Ipv4Addr, u16)> = Vec::new();
            let mut local_endpoints: Vec<(Ipv4Addr, u16)> = Vec::new();
            for slice in own {
                let Some(ep_port) = slice.ports.iter().flatten().find(|sp| {
                    sp.name.clone().unwrap_or_default() == port_name
                        && Protocol::parse(sp.protocol.as_deref()) == protocol
                }) else {
                    continue;
                };
                let Some(port) = ep_port.port.and_then(|n| u16::try_from(n).ok()) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    // Ready unless it says otherwise (the API's rule for a missing field).
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    if let Some(a) = ep.addresses.first().and_then(|a| ipv4(a)) {
                        endpoints.push((a, port));
                        if node.is_some() && ep.node_name.as_deref() == node {
                            local_endpoints.push((a, port));
                        }
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            local_endpoints.sort();
            local_endpoints.dedup();
            out.push(ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
                cluster_ip,
                external_ips: external_ips.clone(),
                port: u16::try_from(p.port).unwrap_or(0),
                node_port: p
                    .node_port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n > 0),
                affinity_seconds,
                endpoints,
                local_endpoints,
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_slices_to_ports() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1"},
            "spec": {"clusterIP": "10.96.0.10", "type": "NodePort",
                     "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                     "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "h", "namespace": "ns1"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "ns1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.1.0.3"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.1.0.2"]},
                {"addresses": ["10.1.0.4"], "conditions": {"ready": false}}
            ]
        }))
        .unwrap();
        let ports = build(
            &[Arc::new(svc), Arc::new(headless)],
            &[Arc::new(slice)],
            Some("n1"),
        );
        assert_eq!(ports.len(), 2);
        let http = ports.iter().find(|p| p.port_name == "http").unwrap();
        assert_eq!(http.id(), "ns1/web/tcp/http");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_seconds, Some(600));
        assert_eq!(http.local_endpoints, [("10.1.0.3".parse().unwrap(), 8080)]);
        assert!(http.external_local && !http.internal_local);
        assert_eq!(
            http.endpoints,
            [
                ("10.1.0.2".parse().unwrap(), 8080),
                ("10.1.0.3".parse().unwrap(), 8080)
            ]
        );
        let dns = ports.iter().find(|p| p.port_name == "dns").unwrap();
        assert_eq!(dns.protocol, Protocol::Udp);
        assert!(dns.endpoints.is_empty());
        assert_eq!(hash("x").len(), 8);
        assert_eq!(hash("x"), hash("x"));
        assert_ne!(hash("x"), hash("y"));
    }
}
