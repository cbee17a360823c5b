//! StatefulSet: pods with stable names `<set>-<ordinal>`, hostnames and subdomain (the
//! governing Service), made in order and removed in reverse order. As kube's controller:
//! with `OrderedReady` the next ordinal is made only when every lower one is Running and
//! Ready, and only one pod is made or removed at a time; `Parallel` makes and removes
//! them together. A deleted pod comes back under the same name. RollingUpdate replaces
//! pods whose revision differs, from the highest ordinal down to the partition, one at
//! a time while the rest are Ready; OnDelete waits for the user to delete them.

use super::controller::live;
use super::deployment::template_hash;
use super::reflector::{Kind, Reflector};
use super::*;

const REVISION: &str = "controller-revision-hash";
const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

fn ordinal(set: &str, pod: &Value) -> Option<i64> {
    pod["metadata"]["name"]
        .as_str()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && pod_ready(p)
}

const STATEFULSETS: &str = "/registry/apps/statefulsets/";
const PODS: &str = "/registry/core/pods/";

pub(crate) struct Controller;

impl super::controller::Reconciler for Controller {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    fn owner_kind(&self) -> Option<&'static str> {
        Some("StatefulSet")
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::whole(STATEFULSETS),
            Kind::masked(PODS, view::pod_fields()).owned_by("StatefulSet"),
        ]
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        if let Some(set) = live(cache, key) {
            sync_set(store, cache, set)?;
        }
        Ok(Action::AwaitChange)
    }
}

fn pod_for(set: &Value, name: &str, i: i64, revision: &str) -> Value {
    let mut pod = pod_from_template(set, "StatefulSet", &set["spec"]["template"]);
    let meta = &mut pod["metadata"];
    meta.as_object_mut().expect("object").remove("generateName");
    meta["name"] = json!(format!("{name}-{i}"));
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][POD_NAME] = json!(format!("{name}-{i}"));
    meta["labels"][POD_INDEX] = json!(i.to_string());
    meta["labels"][REVISION] = json!(revision);
    pod["spec"]["hostname"] = json!(format!("{name}-{i}"));
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(svc);
    }
    pod
}

fn sync_set(store: &Store, cache: &Reflector, set: &Value) -> Result<(), StoreError> {
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = set["metadata"]["name"].as_str().unwrap_or("");
    let uid = set["metadata"]["uid"].as_str().unwrap_or("");
    let spec = &set["spec"];
    let want = spec["replicas"].as_i64().unwrap_or(1).max(0);
    let parallel = spec["podManagementPolicy"] == "Parallel";
    let revision = format!("{name}-{}", template_hash(&spec["template"]));
    let id = format!("{ns}/{name}");
    let mut pods: Vec<(i64, Value)> = cache
        .controlled_by(uid, PODS)
        .filter_map(|p| ordinal(name, p).map(|i| (i, p.clone())))
        .collect();
    pods.sort_by_key(|(i, _)| *i);
    let deleting = |p: &Value| p["metadata"]["deletionTimestamp"].is_string();
    let mut busy = pods.iter().any(|(_, p)| deleting(p));
    // A pod that ended (phase Failed or Succeeded) is replaced, as kube does.
    for (i, p) in &pods {
        if !deleting(p) && matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded")) {
            tracing::info!(statefulset = %id, pod = i, "pod ended: deleting it to recreate");
            super::delete(store, &key_of(p, "core", "pods"), None)?;
            busy = true;
        }
    }
    // Make the missing ordinals below `want`, lowest first.
    for i in 0..want {
        if pods.iter().any(|(o, _)| *o == i) {
            continue;
        }
        // OrderedReady: only when every lower ordinal is Running and Ready, and
        // nothing else is in flight.
        let lower_ready = pods
            .iter()
            .filter(|(o, _)| *o < i)
            .all(|(_, p)| running_ready(p) && !deleting(p));
        if !parallel && (busy || !lower_ready) {
            break;
        }
        tracing::debug!(statefulset = %id, pod = i, "creating pod");
        if let Some(p) = create(store, "core", "pods", pod_for(set, name, i, &revision))? {
            record_event(
                store,
                set,
                "Normal",
                "SuccessfulCreate",
                &format!("create Pod {name}-{i} in StatefulSet {name} successful"),
                "statefulset-controller",
            );
            pods.push((i, p));
            pods.sort_by_key(|(i, _)| *i);
            busy = true;
        }
        if !parallel {
            break;
        }
    }
    // Remove ordinals at or above `want`, highest first.
    let surplus: Vec<(i64, Value)> = pods
        .iter()
        .filter(|(i, p)| *i >= want && !deleting(p))
        .rev()
        .cloned()
        .collect();
    for (i, p) in surplus {
        let others_ready = pods
            .iter()
            .filter(|(o, _)| *o < i)
            .all(|(_, p)| running_ready(p));
        if !parallel && (busy || !others_ready) {
            break;
        }
        tracing::debug!(statefulset = %id, pod = i, "deleting pod");
        super::delete(store, &key_of(&p, "core", "pods"), None)?;
        record_event(
            store,
            set,
            "Normal",
            "SuccessfulDelete",
            &format!("delete Pod {name}-{i} in StatefulSet {name} successful"),
            "statefulset-controller",
        );
        busy = true;
        if !parallel {
            break;
        }
    }
    // RollingUpdate: the highest ordinal (at or above the partition) of an old
    // revision goes, once everything else is Running and Ready.
    if spec["updateStrategy"]["type"] == "RollingUpdate" && !busy {
        let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_i64()
            .unwrap_or(0);
        let live: Vec<&(i64, Value)> = pods.iter().filter(|(i, _)| *i < want).collect();
        let stale = live.iter().rev().find(|(i, p)| {
            *i >= partition && p["metadata"]["labels"][REVISION] != revision.as_str()
        });
        if let Some((i, p)) = stale {
            if live.iter().all(|(_, p)| running_ready(p)) {
                tracing::info!(statefulset = %id, pod = i, "rolling update: replacing pod");
                super::delete(store, &key_of(p, "core", "pods"), None)?;
            }
        }
    }
    let live: Vec<&Value> = pods
        .iter()
        .filter(|(_, p)| !deleting(p))
        .map(|(_, p)| p)
        .collect();
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let updated = live
        .iter()
        .filter(|p| p["metadata"]["labels"][REVISION] == revision.as_str())
        .count();
    let status = json!({
        "observedGeneration": set["metadata"]["generation"],
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": updated,
        "updatedReplicas": updated,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    if set["status"] != status {
        let mut next = set.clone();
        next["status"] = status;
        update_status(store, &key_of(set, "apps", "statefulsets"), &next)?;
    }
    Ok(())
}
