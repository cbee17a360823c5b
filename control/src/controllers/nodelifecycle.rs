//! Node lifecycle: a node whose Lease (kube-node-lease/<node>) has not been renewed for
//! the grace period gets Ready=Unknown and the `node.kubernetes.io/unreachable:NoExecute`
//! taint; its pods are evicted once their toleration of that taint runs out (the default
//! is 300 s, as kube-apiserver's DefaultTolerationSeconds gives every pod), and their
//! controllers recreate them elsewhere. A renewed lease lifts the taint.

use super::*;
use crate::apiserver::table::humantime_parse;
use std::time::SystemTime;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn time_of(v: &Value) -> Option<SystemTime> {
    v.as_str().and_then(|s| humantime_parse(s).ok())
}

fn toleration_secs(pod: &Value, default: Duration) -> Option<Duration> {
    for t in pod["spec"]["tolerations"].as_array().into_iter().flatten() {
        let key_ok = t["key"] == UNREACHABLE || (t["key"].is_null() && t["operator"] == "Exists");
        let effect_ok = t["effect"].is_null() || t["effect"] == "NoExecute";
        if key_ok && effect_ok {
            // Without tolerationSeconds the pod tolerates the taint forever.
            return t["tolerationSeconds"].as_u64().map(Duration::from_secs);
        }
    }
    Some(default)
}

fn parse_time(s: &Option<String>) -> Option<SystemTime> {
    s.as_deref().and_then(|s| humantime_parse(s).ok())
}

/// Nodes (by uid) this controller has announced with a RegisteredNode event.
pub type Registered = std::collections::HashSet<String>;

fn node_event(store: &Store, node: &Value, reason: &str, what: &str) {
    let name = node["metadata"]["name"].as_str().unwrap_or("");
    let msg = format!("Node {name} event: {what}");
    record_event(store, node, "Normal", reason, &msg, "node-controller");
}

/// Ready=False on a pod that says Ready=True (its transition time now), with kube's
/// NodeNotReady event.
fn mark_not_ready(store: &Store, pod: &Value) -> Result<(), StoreError> {
    let Some(conds) = pod["status"]["conditions"].as_array() else {
        return Ok(());
    };
    if !conds
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
    {
        return Ok(());
    }
    // The listed pod has only the fields passes read: the write starts from all of it.
    let Some(kv) = store.get(&key_of(pod, "core", "pods"))? else {
        return Ok(());
    };
    let mut next = decode(&kv);
    for c in next["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if c["type"] == "Ready" {
            c["status"] = json!("False");
            c["lastTransitionTime"] = json!(now_rfc3339());
        }
    }
    tracing::info!(
        pod = %format!("{}/{}", pod["metadata"]["namespace"].as_str().unwrap_or(""), pod["metadata"]["name"].as_str().unwrap_or("")),
        node = pod["spec"]["nodeName"].as_str().unwrap_or(""),
        "node not ready: pod marked not Ready"
    );
    if update_status(store, &key_of(pod, "core", "pods"), &next)?.is_some() {
        record_event(
            store,
            pod,
            "Warning",
            "NodeNotReady",
            "Node is not ready",
            "node-controller",
        );
    }
    Ok(())
}

pub fn reconcile(
    store: &Store,
    cfg: &Config,
    registered: &mut Registered,
) -> Result<(), StoreError> {
    let now = SystemTime::now();
    // All node leases in one read, not one read per node.
    let leases: std::collections::HashMap<String, Option<SystemTime>> = store
        .list("/registry/coordination.k8s.io/leases/kube-node-lease/")?
        .0
        .iter()
        .filter_map(super::view::of)
        .map(|l| (l.metadata.name, parse_time(&l.spec.renew_time)))
        .collect();
    for kv in store.list("/registry/core/nodes/")?.0 {
        let Some(v) = super::view::of(&kv) else {
            continue;
        };
        let name = v.metadata.name.clone();
        // Each node once per controller start, as kube's node controller announces it.
        if registered.insert(v.metadata.uid.clone()) {
            node_event(
                store,
                &decode(&kv),
                "RegisteredNode",
                &format!("Registered Node {name} in Controller"),
            );
        }
        let last = leases
            .get(&name)
            .copied()
            .flatten()
            .or_else(|| parse_time(&v.metadata.created));
        let stale = last.is_none_or(|t| now.duration_since(t).unwrap_or_default() > cfg.node_grace);
        let tainted_now = v
            .spec
            .taints
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute");
        if !stale && !tainted_now {
            continue; // healthy and untainted: nothing to do
        }
        let node = decode(&kv);
        let taints: Vec<Value> = node["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let tainted = taints
            .iter()
            .find(|t| t["key"] == UNREACHABLE && t["effect"] == "NoExecute")
            .cloned();
        let mut next = node.clone();
        if stale && tainted.is_none() {
            let mut t = taints.clone();
            t.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now_rfc3339()}));
            next["spec"]["taints"] = json!(t);
            let mut conds: Vec<Value> = node["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds.retain(|c| c["type"] != "Ready");
            conds.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastTransitionTime": now_rfc3339()}));
            tracing::info!(node = %name, "node stopped renewing its lease: Ready=Unknown, tainted unreachable");
            // The taint is spec, the condition status: two writes, as kube's.
            let key = key_of(&node, "core", "nodes");
            if let Some(mut written) = update(store, &key, &next)? {
                written["status"]["conditions"] = json!(conds);
                if update_status(store, &key, &written)?.is_some() {
                    let msg = format!("Node {name} status is now: NodeNotReady");
                    record_event(
                        store,
                        &node,
                        "Normal",
                        "NodeNotReady",
                        &msg,
                        "node-controller",
                    );
                }
            }
        } else if !stale && tainted.is_some() {
            tracing::info!(node = %name, "node renews its lease again: unreachable taint removed");
            let t: Vec<Value> = taints
                .into_iter()
                .filter(|t| t["key"] != UNREACHABLE)
                .collect();
            next["spec"]["taints"] = json!(t);
            update(store, &key_of(&node, "core", "nodes"), &next)?;
        }
        let pods: Vec<Value> = list_pods(store, "/registry/core/pods/")?
            .into_iter()
            .filter(|p| p["spec"]["nodeName"] == name.as_str())
            .collect();
        // As kube's MarkPodsNotReady: the pods of a node that stopped reporting are not
        // Ready any more, so Services stop sending them traffic at once (not when they
        // are evicted, minutes later).
        if stale {
            for pod in &pods {
                mark_not_ready(store, pod)?;
            }
        }
        // Evict pods whose toleration of the taint has run out.
        let Some(taint) = tainted else { continue };
        let since = time_of(&taint["timeAdded"]).unwrap_or(now);
        let elapsed = now.duration_since(since).unwrap_or_default();
        for pod in pods {
            if toleration_secs(&pod, cfg.eviction_default).is_some_and(|t| elapsed >= t) {
                tracing::info!(node = %name, pod = %format!("{}/{}", pod["metadata"]["namespace"].as_str().unwrap_or(""), pod["metadata"]["name"].as_str().unwrap_or("")), "evicting pod from an unreachable node");
                super::delete(store, &key_of(&pod, "core", "pods"), None)?;
            }
        }
    }
    Ok(())
}
