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

/// What the controller remembers between passes.
#[derive(Default)]
pub struct Memory {
    /// Nodes (by uid) announced with a RegisteredNode event.
    registered: std::collections::HashSet<String>,
    /// Per node: the lease's renewTime last seen and when (on this controller's clock)
    /// it was first seen. Staleness is measured from that moment, as kube's probe
    /// timestamps: a node's clock that runs ahead (or behind) of the controller's cannot
    /// keep a dead node Ready or make a live one NotReady; and a controller that just
    /// started (or took over the lease) gives every node a whole grace period.
    seen: std::collections::HashMap<String, (Option<String>, std::time::Instant)>,
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }
}

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

pub fn reconcile(store: &Store, cfg: &Config, memory: &mut Memory) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let instant = std::time::Instant::now();
    // All node leases in one read, not one read per node.
    let leases: std::collections::HashMap<String, Option<String>> = store
        .list("/registry/coordination.k8s.io/leases/kube-node-lease/")?
        .0
        .iter()
        .filter_map(super::view::of)
        .map(|l| (l.metadata.name, l.spec.renew_time))
        .collect();
    let mut names = std::collections::HashSet::new();
    for kv in store.list("/registry/core/nodes/")?.0 {
        let Some(v) = super::view::of(&kv) else {
            continue;
        };
        let name = v.metadata.name.clone();
        // Each node once per controller start, as kube's node controller announces it.
        if memory.registered.insert(v.metadata.uid.clone()) {
            node_event(
                store,
                &decode(&kv),
                "RegisteredNode",
                &format!("Registered Node {name} in Controller"),
            );
        }
        names.insert(name.clone());
        let renewed = leases.get(&name).cloned().flatten();
        let seen = memory
            .seen
            .entry(name.clone())
            .or_insert_with(|| (renewed.clone(), instant));
        if seen.0 != renewed {
            *seen = (renewed, instant);
        }
        let stale = instant.duration_since(seen.1) > cfg.node_grace;
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
    memory.seen.retain(|n, _| names.contains(n));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taints(store: &Store) -> String {
        decode(&store.get("/registry/core/nodes/n1").unwrap().unwrap())["spec"]["taints"]
            .to_string()
    }

    /// A node whose clock runs an hour ahead writes renew times in the future; when it
    /// dies it must still go unreachable one grace period after its last renewal seen,
    /// and a live node whose clock runs behind must not (kube's probe timestamps).
    #[test]
    fn staleness_is_measured_on_the_controllers_clock() {
        let dir = std::env::temp_dir().join(format!("skiff-nodelife-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        crate::apiserver::objects::ensure_default_namespaces(&store).unwrap();
        let cfg = Config {
            node_grace: Duration::from_millis(600),
            ..Default::default()
        };
        create(
            &store,
            "core",
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        )
        .unwrap();
        let lease_key = "/registry/coordination.k8s.io/leases/kube-node-lease/n1";
        let renew = |at: SystemTime| {
            let t = humantime::format_rfc3339_micros(at).to_string();
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "n1", "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": t}});
            match store.get(lease_key).unwrap() {
                None => {
                    create(&store, "coordination.k8s.io", "leases", lease).unwrap();
                }
                Some(kv) => {
                    let mut cur = decode(&kv);
                    cur["spec"] = lease["spec"].clone();
                    update(&store, lease_key, &cur).unwrap();
                }
            }
        };
        let mut memory = Memory::new();
        // Behind by an hour, renewing: stays healthy.
        for _ in 0..5 {
            renew(SystemTime::now() - Duration::from_secs(3600));
            reconcile(&store, &cfg, &mut memory).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!taints(&store).contains(UNREACHABLE), "{}", taints(&store));
        // Ahead by an hour, then dead: unreachable after the grace period.
        renew(SystemTime::now() + Duration::from_secs(3600));
        reconcile(&store, &cfg, &mut memory).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        reconcile(&store, &cfg, &mut memory).unwrap();
        assert!(taints(&store).contains(UNREACHABLE), "{}", taints(&store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
