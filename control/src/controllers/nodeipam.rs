//! Node IPAM: each Node gets a pod CIDR (spec.podCIDR, spec.podCIDRs) carved out of the
//! cluster CIDR, never one already held by another node; the node's CNI plugin hands out
//! pod addresses from it.

use super::*;
use std::net::Ipv4Addr;

/// "10.244.0.0/16" → (network, prefix).
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (a, p) = s.split_once('/')?;
    let addr: Ipv4Addr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some((u32::from(addr) & mask, prefix))
}

pub fn reconcile(store: &Store, cfg: &Config) -> Result<(), StoreError> {
    let Some((net, prefix)) = cfg.cluster_cidr.as_deref().and_then(parse_cidr) else {
        return Ok(());
    };
    let size = cfg.node_cidr_mask;
    if size < prefix || size > 30 {
        return Ok(());
    }
    let nodes = list(store, "/registry/core/nodes/")?;
    let mut used: Vec<u32> = nodes
        .iter()
        .filter_map(|n| n["spec"]["podCIDR"].as_str().and_then(parse_cidr))
        .map(|(a, _)| a)
        .collect();
    let count = 1u64 << (size - prefix);
    for n in nodes.iter().filter(|n| n["spec"]["podCIDR"].is_null()) {
        let Some(block) = (0..count)
            .map(|i| net + ((i as u32) << (32 - size)))
            .find(|b| !used.contains(b))
        else {
            record_event(
                store,
                n,
                "Warning",
                "CIDRNotAvailable",
                &format!(
                    "Node {} status is now: CIDRNotAvailable",
                    n["metadata"]["name"].as_str().unwrap_or("")
                ),
                "cidrAllocator",
            );
            continue;
        };
        let cidr = format!("{}/{size}", Ipv4Addr::from(block));
        let mut next = n.clone();
        next["spec"]["podCIDR"] = json!(cidr);
        next["spec"]["podCIDRs"] = json!([cidr]);
        update(store, &key_of(n, "core", "nodes"), &next)?;
        used.push(block);
    }
    Ok(())
}
