//! The scheduler loop: pending pods without a node get one (spec.nodeName, the effect
//! of pods/binding) or a PodScheduled=False condition with kube's message, each with an
//! Event (Scheduled, or FailedScheduling with the reason) as kube-scheduler records.

use super::*;
use crate::scheduler::Scheduler;

pub fn reconcile(store: &Store) -> Result<(), StoreError> {
    let nodes = list(store, "/registry/core/nodes/")?;
    let pods = list(store, "/registry/core/pods/")?;
    let mut s = Scheduler::new();
    for n in &nodes {
        if let Ok(node) = serde_json::from_value(n.clone()) {
            s.upsert_node(node);
        }
    }
    for p in pods.iter().filter(|p| p["spec"]["nodeName"].is_string()) {
        if let Ok(pod) = serde_json::from_value(p.clone()) {
            s.assume(&pod, p["spec"]["nodeName"].as_str().unwrap_or(""));
        }
    }
    for p in pods.iter().filter(|p| {
        !p["spec"]["nodeName"].is_string() && p["metadata"]["deletionTimestamp"].is_null()
    }) {
        let Ok(pod) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(p.clone()) else {
            continue;
        };
        let mut next = p.clone();
        match s.schedule(&pod) {
            Ok(node) => {
                s.assume(&pod, &node);
                let msg = format!(
                    "Successfully assigned {}/{} to {node}",
                    p["metadata"]["namespace"].as_str().unwrap_or("default"),
                    p["metadata"]["name"].as_str().unwrap_or("")
                );
                tracing::debug!(pod = %format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap_or(""), p["metadata"]["name"].as_str().unwrap_or("")), node = %node, "scheduled");
                record_event(store, p, "Normal", "Scheduled", &msg, "default-scheduler");
                next["spec"]["nodeName"] = json!(node);
                next["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]);
            }
            Err(e) => {
                let cond = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": e.to_string()}]);
                if p["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.first())
                    .map(|c| &c["message"])
                    == Some(&cond[0]["message"])
                {
                    continue;
                }
                tracing::debug!(pod = %format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap_or(""), p["metadata"]["name"].as_str().unwrap_or("")), reason = %e, "unschedulable");
                record_event(
                    store,
                    p,
                    "Warning",
                    "FailedScheduling",
                    &e.to_string(),
                    "default-scheduler",
                );
                next["status"]["conditions"] = cond;
            }
        }
        update(store, &key_of(p, "core", "pods"), &next)?;
    }
    Ok(())
}
