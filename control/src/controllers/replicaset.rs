//! ReplicaSet: keep `spec.replicas` live pods matching the selector and owned by the set
//! (want 5, 3 exist: create 2; too many: delete the surplus, unscheduled ones first).

use super::controller::live;
use super::reflector::{Kind, Reflector};
use super::*;

fn active(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            p["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        )
}

const REPLICASETS: &str = "/registry/apps/replicasets/";
const PODS: &str = "/registry/core/pods/";

pub(crate) struct Controller;

impl super::controller::Reconciler for Controller {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn owner_kind(&self) -> Option<&'static str> {
        Some("ReplicaSet")
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::whole(REPLICASETS),
            Kind::masked(PODS, view::pod_fields()).owned_by("ReplicaSet"),
        ]
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        if let Some(rs) = live(cache, key) {
            sync(store, cache, rs)?;
        }
        Ok(Action::AwaitChange)
    }
}

fn sync(store: &Store, cache: &Reflector, rs: &Value) -> Result<(), StoreError> {
    let rs = rs.clone();
    {
        let ns = rs["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let mut pods: Vec<Value> = cache
            .controlled_by(&uid, PODS)
            .filter(|p| {
                active(p) && labels_match(&rs["spec"]["selector"], &p["metadata"]["labels"])
            })
            .cloned()
            .collect();
        if pods.len() < want {
            let tpl = &rs["spec"]["template"];
            tracing::debug!(replicaset = %format!("{ns}/{}", rs["metadata"]["name"].as_str().unwrap_or("")), have = pods.len(), want, "creating pods");
            for _ in pods.len()..want {
                let start = std::time::SystemTime::now();
                let pod = pod_from_template(&rs, "ReplicaSet", tpl);
                if let Some(p) = create(store, "core", "pods", pod)? {
                    let name = p["metadata"]["name"].as_str().unwrap_or("");
                    let step = skiff_apimachinery::trace::Step::since(start);
                    let msg = format!("Created pod: {name}");
                    record_step(
                        store,
                        &rs,
                        "SuccessfulCreate",
                        &msg,
                        "replicaset-controller",
                        &step,
                    );
                    pods.push(p);
                }
            }
        } else if pods.len() > want {
            // Unscheduled first, then not ready, then the newest.
            pods.sort_by_key(|p| {
                (
                    p["spec"]["nodeName"].is_string(),
                    pod_ready(p),
                    std::cmp::Reverse(
                        p["metadata"]["creationTimestamp"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    ),
                )
            });
            tracing::debug!(replicaset = %format!("{ns}/{}", rs["metadata"]["name"].as_str().unwrap_or("")), have = pods.len(), want, "deleting pods");
            for p in pods.drain(..pods.len() - want) {
                super::delete(store, &key_of(&p, "core", "pods"), None)?;
            }
        }
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        let status = json!({"replicas": pods.len(), "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]});
        if rs["status"] != status {
            let mut next = rs.clone();
            next["status"] = status;
            update_status(store, &key_of(&rs, "apps", "replicasets"), &next)?;
        }
    }
    Ok(())
}
