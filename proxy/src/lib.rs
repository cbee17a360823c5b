//! Skiff's kube-proxy: on each node, Services (ClusterIP, NodePort, externalIPs) and the
//! ready endpoints of their EndpointSlices become packet-filter rules that DNAT service
//! traffic to a randomly chosen endpoint (or the client's previous one, with session
//! affinity). nftables is the default (one table of its own whose cost does not grow
//! with the number of sets, edited in one transaction per sync touching only what
//! changed); iptables (kube-proxy's chain layout, partial iptables-restore syncs) is
//! the alternative. Syncs run through a bounded-frequency runner; `/metrics` and
//! `/healthz` report them.

pub mod apply;
pub mod dns;
pub mod generation;
pub mod iptables;
pub mod metrics;
pub mod model;
pub mod nftables;
pub mod programmed;
pub mod routes;
pub mod runner;
pub mod vxlan;

pub use model::{Protocol, ServicePort};

/// Settings shared by both modes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pod traffic to a service from outside this range is masqueraded (kube-proxy's
    /// --cluster-cidr); without it only NodePort and hairpin traffic is.
    pub cluster_cidr: Option<String>,
    /// The nftables table (or iptables chain prefix) this proxy owns.
    pub table: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cluster_cidr: None,
            table: "skiff-proxy".into(),
        }
    }
}
