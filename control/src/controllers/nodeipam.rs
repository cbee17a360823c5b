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

/// Nodes already told that no CIDR is left (one event each, not one per pass).
pub type Reported = std::collections::HashSet<String>;

pub fn reconcile(store: &Store, cfg: &Config, reported: &mut Reported) -> Result<(), StoreError> {
    let Some((net, prefix)) = cfg.cluster_cidr.as_deref().and_then(parse_cidr) else {
        return Ok(());
    };
    let size = cfg.node_cidr_mask;
    if size < prefix || size > 30 {
        return Ok(());
    }
    // Only spec.podCIDR of every node each pass; whole nodes only for those without.
    let kvs = store.list("/registry/core/nodes/")?.0;
    let mut used = std::collections::HashSet::new();
    let mut nodes = Vec::new();
    for kv in &kvs {
        let cidr = super::view::of(kv).and_then(|v| v.spec.pod_cidr);
        match cidr.as_deref().and_then(parse_cidr) {
            Some((a, _)) => {
                used.insert(a);
            }
            None => nodes.push(decode(kv)),
        }
    }
    let count = 1u64 << (size - prefix);
    // Blocks are handed out in order: the search resumes where the last one ended.
    let mut next_free = 0u64;
    for n in nodes.iter().filter(|n| n["spec"]["podCIDR"].is_null()) {
        let block = (next_free..count)
            .map(|i| (i, net + ((i as u32) << (32 - size))))
            .find(|(_, b)| !used.contains(b));
        let Some((i, block)) = block else {
            next_free = count;
            let uid = n["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if !reported.insert(uid) {
                continue;
            }
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
        used.insert(block);
        next_free = i + 1;
    }
    Ok(())
}
