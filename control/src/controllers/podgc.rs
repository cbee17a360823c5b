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
    let mut still_orphaned = Vec::new();
    let nodes: HashMap<String, Value> = list(store, "/registry/core/nodes/")?
        .into_iter()
        .filter_map(|n| Some((n["metadata"]["name"].as_str()?.to_string(), n)))
        .collect();
    for pod in list(store, "/registry/core/pods/")? {
        let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        let terminating = pod["metadata"]["deletionTimestamp"].is_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let force = match nodes.get(node) {
            None => {
                let since = *orphans.entry(uid.clone()).or_insert_with(Instant::now);
                still_orphaned.push(uid);
                since.elapsed() >= cfg.pod_gc_quarantine
            }
            Some(n) => {
                terminating
                    && n["spec"]["taints"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t["key"] == OUT_OF_SERVICE))
            }
        };
        if force {
            delete_object(store, &key_of(&pod, "core", "pods"), Some(0))?;
        }
    }
    orphans.retain(|uid, _| still_orphaned.contains(uid));
    Ok(())
}
