//! Deployment: one ReplicaSet per pod template (named by the template's hash, labelled
//! pod-template-hash, annotated with its revision), rolled out by the strategy:
//! RollingUpdate (the default) brings the new ReplicaSet up and old ones down within
//! maxSurge / maxUnavailable of spec.replicas; Recreate scales old ones to zero first.
//! A template equal to an older ReplicaSet's (kubectl rollout undo) reuses that set under
//! a new revision. Old empty sets beyond revisionHistoryLimit are deleted. Status and
//! the Available/Progressing conditions are what `kubectl rollout status` reads.

use super::controller::live;
use super::reflector::{Kind, Reflector};
use super::*;

const REVISION: &str = "deployment.kubernetes.io/revision";

/// A field set to null is the same as a field left out (as in kube's typed objects):
/// kubectl's undo sends the template back with `creationTimestamp: null`.
fn without_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(without_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

pub(crate) fn template_hash(tpl: &Value) -> String {
    let mut t = tpl.clone();
    without_nulls(&mut t);
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in t.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{:x}", h)[..10].to_string()
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// maxSurge / maxUnavailable: an int or a percentage of `replicas` (surge rounds up,
/// unavailable down, as Kubernetes does).
fn int_or_percent(v: &Value, replicas: i64, round_up: bool, default_pct: i64) -> i64 {
    let pct = |p: i64| {
        if round_up {
            (replicas * p + 99) / 100
        } else {
            replicas * p / 100
        }
    };
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .map(pct)
            .or_else(|| s.parse().ok())
            .unwrap_or(0),
        _ => pct(default_pct),
    }
}

/// (maxSurge, maxUnavailable) of a Deployment for `replicas`; both zero means one
/// may be unavailable, as Kubernetes validates it.
fn surge_and_unavailable(d: &Value, replicas: i64) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = int_or_percent(&ru["maxSurge"], replicas, true, 25);
    let unavail = int_or_percent(&ru["maxUnavailable"], replicas, false, 25);
    if surge == 0 && unavail == 0 {
        (0, 1)
    } else {
        (surge, unavail)
    }
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn available(rs: &Value) -> i64 {
    rs["status"]["availableReplicas"].as_i64().unwrap_or(0)
}

/// kube's ScalingReplicaSet event on deployment `d`.
fn scaled(store: &Store, d: &Value, rs: &Value, from: i64, to: i64) {
    let msg = format!(
        "Scaled {} replica set {} to {to} from {from}",
        if to > from { "up" } else { "down" },
        rs["metadata"]["name"].as_str().unwrap_or("")
    );
    record_event(
        store,
        d,
        "Normal",
        "ScalingReplicaSet",
        &msg,
        "deployment-controller",
    );
}

/// Scale a ReplicaSet of deployment `d`, with kube's ScalingReplicaSet event.
fn set_replicas(store: &Store, d: &Value, rs: &Value, n: i64) -> Result<(), StoreError> {
    let from = spec_replicas(rs);
    if from != n {
        let mut next = rs.clone();
        next["spec"]["replicas"] = json!(n);
        if update(store, &key_of(rs, "apps", "replicasets"), &next)?.is_some() {
            scaled(store, d, rs, from, n);
        }
    }
    Ok(())
}

const DEPLOYMENTS: &str = "/registry/apps/deployments/";
const REPLICASETS: &str = "/registry/apps/replicasets/";

pub(crate) struct Controller;

impl super::controller::Reconciler for Controller {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn owner_kind(&self) -> Option<&'static str> {
        Some("Deployment")
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::whole(DEPLOYMENTS),
            Kind::whole(REPLICASETS).owned_by("Deployment"),
        ]
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        let Some(d) = live(cache, key) else {
            return Ok(Action::AwaitChange);
        };
        let uid = d["metadata"]["uid"].as_str().unwrap_or("");
        let owned: Vec<&Value> = cache.controlled_by(uid, REPLICASETS).collect();
        reconcile_one(store, d, &owned)?;
        Ok(Action::AwaitChange)
    }
}

fn reconcile_one(store: &Store, d: &Value, owned: &[&Value]) -> Result<(), StoreError> {
    let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let hash = template_hash(&d["spec"]["template"]);
    let max_rev = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let paused = d["spec"]["paused"].as_bool().unwrap_or(false);
    let is_new = |rs: &&&Value| rs["metadata"]["labels"]["pod-template-hash"] == hash.as_str();
    let mut new_rs: Option<Value> = owned.iter().find(is_new).map(|rs| (**rs).clone());
    let olds: Vec<&Value> = owned.iter().filter(|rs| !is_new(rs)).copied().collect();
    let recreate = d["spec"]["strategy"]["type"] == "Recreate";

    if paused {
        // Only scaling of the current set while paused; no rollout.
        if let Some(rs) = &new_rs {
            set_replicas(store, d, rs, replicas)?;
        }
        write_status(store, d, new_rs.as_ref(), owned, replicas, &hash)?;
        return Ok(());
    }

    // The ReplicaSet of the current template: made, or an old one taken back (undo).
    match &mut new_rs {
        None => {
            let old_total: i64 = olds.iter().map(|rs| spec_replicas(rs)).sum();
            let start = if recreate || olds.is_empty() {
                if recreate && old_total > 0 {
                    0
                } else {
                    replicas
                }
            } else {
                let (surge, _) = surge_and_unavailable(d, replicas);
                (replicas + surge - old_total).clamp(0, replicas)
            };
            let mut tpl = d["spec"]["template"].clone();
            tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let labels = tpl["metadata"]["labels"].clone();
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"namespace": ns, "name": format!("{name}-{hash}"), "labels": labels, "generation": 1,
                             "annotations": {REVISION: (max_rev + 1).to_string()},
                             "ownerReferences": [owner_ref(d, "apps/v1", "Deployment")]},
                "spec": {"replicas": start, "selector": selector, "template": tpl}
            });
            new_rs = create(store, "apps", "replicasets", rs)?;
            if let Some(rs) = new_rs.as_ref().filter(|_| start > 0) {
                scaled(store, d, rs, 0, start);
            }
        }
        Some(rs) => {
            // Back to an older template: it becomes the newest revision.
            if revision(rs) < max_rev {
                let mut next = rs.clone();
                next["metadata"]["annotations"][REVISION] = json!((max_rev + 1).to_string());
                update(store, &key_of(rs, "apps", "replicasets"), &next)?;
                return Ok(()); // the next round works on the updated set
            }
        }
    }
    let Some(new_rs) = new_rs else { return Ok(()) };

    if recreate {
        for old in &olds {
            set_replicas(store, d, old, 0)?;
        }
        // Up only once every old pod is gone.
        let old_pods: i64 = olds
            .iter()
            .map(|rs| rs["status"]["replicas"].as_i64().unwrap_or(0))
            .sum();
        if old_pods == 0 {
            set_replicas(store, d, &new_rs, replicas)?;
        }
    } else {
        let (surge, unavail) = surge_and_unavailable(d, replicas);
        // Old pods still there count until their ReplicaSet has removed them, so the
        // surge bound holds for live pods, not only for the sets' specs.
        let old_total: i64 = olds
            .iter()
            .map(|rs| spec_replicas(rs).max(rs["status"]["replicas"].as_i64().unwrap_or(0)))
            .sum();
        let new_spec = spec_replicas(&new_rs);
        // Scale up: never more than replicas + maxSurge pods in all.
        let target = if new_spec > replicas {
            replicas
        } else {
            (replicas + surge - old_total).clamp(new_spec, replicas)
        };
        set_replicas(store, d, &new_rs, target)?;
        // Scale down old sets, as kube reasons: from the pods the specs ask for (not from
        // statuses, which lag), keep replicas - maxUnavailable, counting new pods that are
        // not available yet as missing.
        let min_available = replicas - unavail;
        let all_pods = target + olds.iter().map(|rs| spec_replicas(rs)).sum::<i64>();
        let new_unavailable = (target - available(&new_rs)).max(0);
        let mut can_remove = (all_pods - min_available - new_unavailable).max(0);
        let mut olds_sorted = olds.clone();
        olds_sorted.sort_by_key(|rs| revision(rs));
        for old in olds_sorted {
            let spec = spec_replicas(old);
            let cut = spec.min(can_remove);
            if cut > 0 {
                set_replicas(store, d, old, spec - cut)?;
                can_remove -= cut;
            }
        }
    }

    // Revision history: old, empty sets beyond the limit go, oldest first.
    let limit = d["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let mut empty: Vec<&&Value> = olds
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && rs["status"]["replicas"].as_i64().unwrap_or(0) == 0)
        .collect();
    if empty.len() > limit {
        empty.sort_by_key(|rs| revision(rs));
        for rs in &empty[..empty.len() - limit] {
            super::delete(store, &key_of(rs, "apps", "replicasets"), None)?;
        }
    }
    write_status(store, d, Some(&new_rs), owned, replicas, &hash)?;
    Ok(())
}

fn write_status(
    store: &Store,
    d: &Value,
    new_rs: Option<&Value>,
    owned: &[&Value],
    replicas: i64,
    hash: &str,
) -> Result<(), StoreError> {
    let sum = |f: &str| {
        owned
            .iter()
            .map(|rs| rs["status"][f].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let updated = new_rs.map_or(0, |rs| rs["status"]["replicas"].as_i64().unwrap_or(0));
    let new_available = new_rs.map_or(0, available);
    let avail = sum("availableReplicas");
    let (_, unavail) = surge_and_unavailable(d, replicas);
    let now = now_rfc3339();
    let complete = updated == replicas && sum("replicas") == replicas && new_available == replicas;
    let old_conds = d["status"]["conditions"].clone();
    let cond = |typ: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        // Keep the transition time while the status stays the same.
        let prev = old_conds
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == typ).cloned());
        let since = prev
            .as_ref()
            .filter(|c| c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        let updated = prev
            .as_ref()
            .filter(|c| c["status"] == status && c["reason"] == reason)
            .and_then(|c| c["lastUpdateTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        json!({"type": typ, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": since, "lastUpdateTime": updated})
    };
    let rs_name = new_rs
        .and_then(|rs| rs["metadata"]["name"].as_str())
        .unwrap_or("")
        .to_string();
    let conditions = json!([
        cond(
            "Available",
            avail >= replicas - unavail,
            if avail >= replicas - unavail {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if avail >= replicas - unavail {
                "Deployment has minimum availability.".into()
            } else {
                "Deployment does not have minimum availability.".into()
            }
        ),
        cond(
            "Progressing",
            true,
            if complete {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
            if complete {
                format!("ReplicaSet \"{rs_name}\" has successfully progressed.")
            } else {
                format!("ReplicaSet \"{rs_name}\" is progressing.")
            }
        ),
    ]);
    let mut status = json!({
        "replicas": sum("replicas"), "updatedReplicas": updated, "readyReplicas": sum("readyReplicas"),
        "availableReplicas": avail, "unavailableReplicas": (replicas - avail).max(0),
        "observedGeneration": d["metadata"]["generation"], "conditions": conditions,
    });
    let _ = hash;
    let rev = new_rs.map(revision).unwrap_or(0);
    let mut next = d.clone();
    // Compare without the timestamps, which change every round.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(a) = v["conditions"].as_array_mut() {
            for c in a {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastUpdateTime");
                    o.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    let same_status = strip(&d["status"]) == strip(&status);
    let same_rev = revision(d) == rev || rev == 0;
    if same_status && same_rev {
        return Ok(());
    }
    if same_status {
        status = d["status"].clone();
    }
    let key = key_of(d, "apps", "deployments");
    // The revision annotation is metadata, the rest status: two writes, as kube's.
    if rev > 0 && !same_rev {
        next["metadata"]["annotations"][REVISION] = json!(rev.to_string());
        match update(store, &key, &next)? {
            Some(written) => next = written,
            None => return Ok(()),
        }
    }
    if !same_status {
        next["status"] = status;
        update_status(store, &key, &next)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_like_kubernetes() {
        assert_eq!(int_or_percent(&Value::Null, 10, true, 25), 3);
        assert_eq!(int_or_percent(&Value::Null, 10, false, 25), 2);
        assert_eq!(int_or_percent(&json!("50%"), 3, true, 0), 2);
        assert_eq!(int_or_percent(&json!("50%"), 3, false, 0), 1);
        assert_eq!(int_or_percent(&json!(2), 3, false, 0), 2);
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {}});
        let mut b = a.clone();
        b["metadata"]["labels"]["pod-template-hash"] = json!("abc");
        assert_eq!(template_hash(&a), template_hash(&b));
    }
}
