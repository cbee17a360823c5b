//! DaemonSet: one pod on every eligible node (its nodeSelector matches and its taints
//! are tolerated; the pods tolerate the node conditions kube's DaemonSets tolerate), bound
//! directly to the node. Pods on nodes that are gone or no longer eligible are deleted.
//! A new template rolls out node by node within maxUnavailable (RollingUpdate), or waits
//! for pods to be deleted by hand (OnDelete).

use super::controller::{live, own_or_owner};
use super::reflector::{Kind, Reflector};
use super::*;

const HASH: &str = "controller-revision-hash";

/// Tolerations every DaemonSet pod gets, as the DaemonSet controller adds them.
fn default_tolerations() -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    for k in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        t.push(json!({"key": k, "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = t["key"]
            .as_str()
            .is_none_or(|k| k.is_empty() || taint["key"] == k);
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || taint["effect"] == e);
        let value_ok = match t["operator"].as_str().unwrap_or("Equal") {
            "Exists" => true,
            _ => t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""),
        };
        key_ok && effect_ok && value_ok && !(t["key"].is_null() && t["operator"] != "Exists")
    })
}

fn eligible(node: &Value, tpl_spec: &Value, tolerations: &[Value]) -> bool {
    let selector_ok = tpl_spec["nodeSelector"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| node["metadata"]["labels"][k] == *v));
    let taints_ok = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule") | Some("NoExecute")))
        .all(|t| tolerates(tolerations, t));
    selector_ok && taints_ok
}

fn template_hash(tpl: &Value) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in tpl.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{:x}", h)[..10].to_string()
}

fn delete_pod(store: &Store, p: &Value) -> Result<(), StoreError> {
    super::delete(store, &key_of(p, "core", "pods"), None)?;
    Ok(())
}

const DAEMONSETS: &str = "/registry/apps/daemonsets/";
const PODS: &str = "/registry/core/pods/";
const NODES: &str = "/registry/core/nodes/";

/// What placement reads of a node.
fn node_fields() -> &'static Value {
    static MASK: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    MASK.get_or_init(
        || json!({"metadata": {"name": true, "labels": true}, "spec": {"taints": true}}),
    )
}

pub(crate) struct Controller;

impl super::controller::Reconciler for Controller {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::whole(DAEMONSETS),
            Kind::masked(PODS, view::pod_fields()).owned_by("DaemonSet"),
            Kind::masked(NODES, node_fields()),
        ]
    }

    fn concerned(
        &self,
        cache: &Reflector,
        key: &str,
        prev: Option<&Value>,
        now: Option<&Value>,
    ) -> Vec<String> {
        if key.starts_with(NODES) {
            // A node came, went, or changed its labels or taints (its view is only
            // those; a heartbeat changes nothing): every DaemonSet may place anew.
            let strip = |v: Option<&Value>| {
                v.map(|v| {
                    let mut v = v.clone();
                    v["metadata"]["resourceVersion"] = Value::Null;
                    v
                })
            };
            if strip(prev) == strip(now) {
                return Vec::new();
            }
            return self.keys(cache);
        }
        own_or_owner(key, DAEMONSETS, "DaemonSet", prev, now)
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        if let Some(ds) = live(cache, key) {
            sync(store, cache, ds)?;
        }
        Ok(Action::AwaitChange)
    }
}

fn sync(store: &Store, cache: &Reflector, ds: &Value) -> Result<(), StoreError> {
    let nodes: Vec<&Value> = cache.list(NODES).map(|(_, n)| n).collect();
    {
        let uid = ds["metadata"]["uid"].as_str().unwrap_or("");
        let tpl = &ds["spec"]["template"];
        let hash = template_hash(tpl);
        let mut tolerations: Vec<Value> = tpl["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tolerations.extend(default_tolerations());
        let owned: Vec<&Value> = cache
            .controlled_by(uid, PODS)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let wanted: Vec<&Value> = nodes
            .iter()
            .copied()
            .filter(|n| eligible(n, &tpl["spec"], &tolerations))
            .collect();
        let wanted_names: Vec<&str> = wanted
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        let (mut current, mut updated, mut ready, mut misscheduled) = (0, 0, 0, 0);
        let mut old_on_nodes: Vec<&Value> = Vec::new();
        let mut unavailable = 0;
        for p in &owned {
            if !wanted_names.contains(&p["spec"]["nodeName"].as_str().unwrap_or("")) {
                misscheduled += 1;
                delete_pod(store, p)?;
            }
        }
        for n in &wanted {
            let name = n["metadata"]["name"].as_str().unwrap_or("");
            let mut here: Vec<&&Value> = owned
                .iter()
                .filter(|p| p["spec"]["nodeName"] == name)
                .collect();
            here.sort_by_key(|p| {
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            });
            for extra in here.iter().skip(1) {
                delete_pod(store, extra)?;
            }
            match here.first() {
                None => {
                    unavailable += 1;
                    let mut pod = pod_from_template(ds, "DaemonSet", tpl);
                    pod["metadata"]["labels"][HASH] = json!(hash);
                    pod["spec"]["nodeName"] = json!(name);
                    pod["spec"]["tolerations"] = json!(tolerations);
                    create(store, "core", "pods", pod)?;
                }
                Some(p) => {
                    current += 1;
                    if pod_ready(p) {
                        ready += 1;
                    } else {
                        unavailable += 1;
                    }
                    if p["metadata"]["labels"][HASH] == hash.as_str() {
                        updated += 1;
                    } else {
                        old_on_nodes.push(p);
                    }
                }
            }
        }
        // Rolling update: replace old pods while at most maxUnavailable are down.
        let strategy = &ds["spec"]["updateStrategy"];
        if strategy["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate" {
            let desired = wanted.len() as i64;
            let max_unavail = match &strategy["rollingUpdate"]["maxUnavailable"] {
                Value::Number(n) => n.as_i64().unwrap_or(1),
                Value::String(s) => s
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<i64>().ok())
                    .map(|p| (desired * p / 100).max(1))
                    .unwrap_or(1),
                _ => 1,
            };
            // Not-ready old pods first: replacing them costs no availability.
            old_on_nodes.sort_by_key(|p| pod_ready(p));
            let mut budget = max_unavail - unavailable;
            for p in old_on_nodes {
                if !pod_ready(p) {
                    delete_pod(store, p)?;
                } else if budget > 0 {
                    delete_pod(store, p)?;
                    budget -= 1;
                }
            }
        }
        let desired = wanted.len() as i64;
        let status = json!({
            "desiredNumberScheduled": desired, "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled, "numberReady": ready, "numberAvailable": ready,
            "numberUnavailable": (desired - ready).max(0), "updatedNumberScheduled": updated,
            "observedGeneration": ds["metadata"]["generation"],
        });
        if ds["status"] != status {
            let mut next = ds.clone();
            next["status"] = status;
            update_status(store, &key_of(ds, "apps", "daemonsets"), &next)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_and_selectors_decide_eligibility() {
        let tol = default_tolerations();
        let plain = json!({"metadata": {"name": "a", "labels": {"disk": "ssd"}}, "spec": {}});
        let tainted = json!({"metadata": {"name": "b"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}});
        let cordoned = json!({"metadata": {"name": "c"}, "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}});
        assert!(eligible(&plain, &json!({}), &tol));
        assert!(!eligible(&tainted, &json!({}), &tol));
        assert!(
            eligible(&cordoned, &json!({}), &tol),
            "DaemonSets run on cordoned nodes"
        );
        let mut gpu = tol.clone();
        gpu.push(json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}));
        assert!(eligible(&tainted, &json!({}), &gpu));
        assert!(!eligible(
            &plain,
            &json!({"nodeSelector": {"disk": "hdd"}}),
            &tol
        ));
        assert!(eligible(
            &plain,
            &json!({"nodeSelector": {"disk": "ssd"}}),
            &tol
        ));
    }
}
