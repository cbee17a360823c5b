//! Cluster DNS on every node: skiff-proxy already holds every Service and EndpointSlice
//! for its rules, so it also answers the cluster's names from them, at the kube-dns
//! address the kubelet writes into pods' resolv.conf (`--cluster-dns`), held on the
//! node's loopback — a pod's question never leaves its node (the job NodeLocal DNSCache
//! does in front of CoreDNS). The Service holding that address is left out of the
//! proxy's rules so the node's own server answers.

pub mod server;
pub mod zone;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// Put `ip` on the node's loopback, so the node's own server answers it (a local
/// address is delivered locally whichever link a pod's packet came in by; a dummy link,
/// as NodeLocal DNSCache uses, needs a kernel module nodes may lack); an address there
/// already is left as it is.
pub fn hold_address(ip: std::net::IpAddr) -> Result<(), crate::apply::ApplyError> {
    use crate::apply::run;
    let cidr = match ip {
        std::net::IpAddr::V4(_) => format!("{ip}/32"),
        std::net::IpAddr::V6(_) => format!("{ip}/128"),
    };
    let addrs = run("ip", &["-o", "addr", "show", "dev", "lo"], None)?;
    if !addrs.split_whitespace().any(|w| w == cidr) {
        run("ip", &["addr", "add", &cidr, "dev", "lo"], None)?;
    }
    Ok(())
}

/// The nameservers of a resolv.conf, as addresses to send questions to.
pub fn upstream_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A zone kept equal to the Services and EndpointSlices: rebuilt (at most every
/// 100 ms) after each change `changed` announces.
pub fn follow(
    services: kube::runtime::reflector::Store<Service>,
    slices: kube::runtime::reflector::Store<EndpointSlice>,
    domain: String,
    changed: Arc<tokio::sync::Notify>,
) -> server::Shared {
    let build = move || {
        Arc::new(zone::Zone::build(
            &services.state(),
            &slices.state(),
            &domain,
        ))
    };
    let shared: server::Shared = Arc::new(RwLock::new(build()));
    let out = shared.clone();
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let z = build();
            *shared.write().unwrap_or_else(|p| p.into_inner()) = z;
        }
    });
    out
}
