//! A pod's resolv.conf, as the kubelet computes it (pkg/kubelet/network/dns): by the
//! pod's `dnsPolicy` — ClusterFirst (the default): the cluster's DNS address, the search
//! list `NAMESPACE.svc.DOMAIN svc.DOMAIN DOMAIN` followed by the node's own, and
//! `ndots:5`; Default: the node's resolv.conf; None: nothing — then the pod's
//! `dnsConfig` added (nameservers and searches appended without duplicates, options
//! replaced by name). A host-network pod under ClusterFirst gets the node's, unless its
//! policy is ClusterFirstWithHostNet; with no cluster DNS configured, ClusterFirst falls
//! back to the node's (the kubelet warns the same way).

use k8s_openapi::api::core::v1::Pod;
use skiff_cri::v1;
use std::net::IpAddr;

/// Kubernetes' limits on what a resolver reads: 3 nameservers, 32 search domains.
const MAX_SERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The node's resolver settings (its resolv.conf).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolv {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl Resolv {
    /// Parse resolv.conf text (`nameserver`, `search`/`domain`, `options` lines).
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.servers.extend(words.next().map(str::to_string)),
                // The last search or domain line wins, as in glibc.
                Some("search") | Some("domain") => r.searches = words.map(str::to_string).collect(),
                Some("options") => r.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        r
    }
}

/// The kubelet's DNS settings (`--cluster-dns`, `--cluster-domain`, `--resolv-conf`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub host: Resolv,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            host: Resolv::default(),
        }
    }
}

fn push_unique(to: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !to.contains(&i) {
            to.push(i);
        }
    }
}

/// The DNS configuration the runtime writes into the pod's resolv.conf.
pub fn for_pod(s: &Settings, pod: &Pod) -> v1::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut r =
        match policy {
            "None" => Resolv::default(),
            _ if cluster && !s.cluster_dns.is_empty() => {
                let d = &s.cluster_domain;
                let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                push_unique(&mut searches, s.host.searches.iter().cloned());
                Resolv {
                    servers: s.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                    searches,
                    options: vec!["ndots:5".into()],
                }
            }
            _ => {
                if cluster {
                    tracing::warn!(namespace = ns, pod = pod.metadata.name.as_deref().unwrap_or(""),
                    "ClusterFirst policy but no --cluster-dns: the pod gets the node's resolvers");
                }
                s.host.clone()
            }
        };
    if let Some(c) = &spec.dns_config {
        push_unique(&mut r.servers, c.nameservers.clone().unwrap_or_default());
        push_unique(&mut r.searches, c.searches.clone().unwrap_or_default());
        for o in c.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            r.options
                .retain(|have| have.split(':').next() != Some(name));
            r.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            });
        }
    }
    r.servers.truncate(MAX_SERVERS);
    r.searches.truncate(MAX_SEARCHES);
    v1::DnsConfig {
        servers: r.servers,
        searches: r.searches,
        options: r.options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    fn settings() -> Settings {
        Settings {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: Resolv::parse(
                "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions edns0 timeout:2\n",
            ),
        }
    }

    #[test]
    fn cluster_first_is_the_cluster_resolver_with_kubernetes_search_list() {
        let c = for_pod(&settings(), &pod(json!({"containers": []})));
        assert_eq!(c.servers, ["10.96.0.10"]);
        assert_eq!(
            c.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "lab.example"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
    }

    #[test]
    fn host_network_and_default_policies_get_the_nodes_resolvers() {
        let host = for_pod(
            &settings(),
            &pod(json!({"containers": [], "hostNetwork": true})),
        );
        assert_eq!(host.servers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(host.searches, ["corp.example", "lab.example"]);
        assert_eq!(host.options, ["edns0", "timeout:2"]);
        let with_host_net = for_pod(
            &settings(),
            &pod(
                json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            ),
        );
        assert_eq!(with_host_net.servers, ["10.96.0.10"]);
        let default = for_pod(
            &settings(),
            &pod(json!({"containers": [], "dnsPolicy": "Default"})),
        );
        assert_eq!(default.servers, ["192.0.2.53", "192.0.2.54"]);
        // No cluster DNS configured: ClusterFirst falls back to the node's.
        let none_configured = Settings {
            cluster_dns: Vec::new(),
            ..settings()
        };
        let c = for_pod(&none_configured, &pod(json!({"containers": []})));
        assert_eq!(c.servers, ["192.0.2.53", "192.0.2.54"]);
    }

    #[test]
    fn dns_config_is_merged_and_none_takes_only_it() {
        let spec = json!({"containers": [], "dnsConfig": {
            "nameservers": ["10.96.0.10", "198.51.100.1", "198.51.100.2"],
            "searches": ["svc.cluster.local", "extra.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}});
        let c = for_pod(&settings(), &pod(spec.clone()));
        // Appended without duplicates, then cut at three nameservers.
        assert_eq!(c.servers, ["10.96.0.10", "198.51.100.1", "198.51.100.2"]);
        assert_eq!(c.searches.last().unwrap(), "extra.example");
        assert_eq!(
            c.searches
                .iter()
                .filter(|s| *s == "svc.cluster.local")
                .count(),
            1
        );
        assert_eq!(c.options, ["ndots:2", "edns0"]);
        let mut none = spec;
        none["dnsPolicy"] = json!("None");
        let c = for_pod(&settings(), &pod(none));
        assert_eq!(c.searches, ["svc.cluster.local", "extra.example"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
    }
}
