//! Pod garbage collection, as kube-controller-manager's podgc: pods whose kubelet can
//! no longer confirm their end are deleted at once (grace period 0). That is a pod
//! bound to a node that has not existed for the quarantine time (40 s: a pod may be
//! created before its node registers), and a terminating pod on a node taken out of
//! service (taint `node.kubernetes.io/out-of-service`). Pods on a node that is merely
//! unreachable stay Terminating, as in Kubernetes: it may still be running them.

use super::*;
use std::collections::HashMap;
use std::time::Instant;

const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Pods (by uid) first seen on a missing node, and when; kept by the caller's loop.
pub type Orphans = HashMap<String, Instant>;

pub fn reconcile(store: &Store, cfg: &Config, orphans: &mut Orphans) -> Result<(), StoreError> {
    let view = super::view::of;
    let mut still_orphaned = std::collections::HashSet::new();
    // Node name → taken out of service.
    let nodes: HashMap<String, bool> = store
        .list("/registry/core/nodes/")?
        .0
        .iter()
        .filter_map(view)
        .map(|n| {
            let out = n.spec.taints.iter().any(|t| t.key == OUT_OF_SERVICE);
            (n.metadata.name, out)
        })
        .collect();
    for kv in store.list("/registry/core/pods/")?.0 {
        let Some(pod) = view(&kv) else { continue };
        let Some(node) = pod.spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let terminating = pod.metadata.deleted.is_some();
        let uid = pod.metadata.uid.clone();
        let force = match nodes.get(node) {
            None => {
                let since = *orphans.entry(uid.clone()).or_insert_with(Instant::now);
                still_orphaned.insert(uid);
                since.elapsed() >= cfg.pod_gc_quarantine
            }
            Some(out_of_service) => terminating && *out_of_service,
        };
        if force {
            super::delete(store, &kv.key, Some(0))?;
        }
    }
    orphans.retain(|uid, _| still_orphaned.contains(uid));
    Ok(())
}
