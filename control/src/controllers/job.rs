//! Job: run pods until `completions` of them succeed, at most `parallelism` at a time;
//! more than `backoffLimit` failures (failed pods, and container restarts of
//! `OnFailure` pods) fail the Job. As kube's job controller: SuccessCriteriaMet then
//! Complete, FailureTarget then Failed (reason BackoffLimitExceeded), active pods of a
//! finished Job deleted, startTime/completionTime, and the events SuccessfulCreate,
//! SuccessfulDelete, Completed and BackoffLimitExceeded. A suspended Job has no pods.

use super::controller::live;
use super::reflector::{Kind, Reflector};
use super::*;

fn terminal(p: &Value) -> Option<&str> {
    match p["status"]["phase"].as_str() {
        Some(ph @ ("Succeeded" | "Failed")) => Some(ph),
        _ => None,
    }
}

fn has_condition(job: &Value, kind: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn condition(kind: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": now, "lastTransitionTime": now})
}

fn event(store: &Store, job: &Value, warning: bool, reason: &str, msg: &str) {
    let kind = if warning { "Warning" } else { "Normal" };
    record_event(store, job, kind, reason, msg, "job-controller");
}

const JOBS: &str = "/registry/batch/jobs/";
const PODS: &str = "/registry/core/pods/";

pub(crate) struct Controller;

impl super::controller::Reconciler for Controller {
    fn name(&self) -> &'static str {
        "job"
    }

    fn owner_kind(&self) -> Option<&'static str> {
        Some("Job")
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::whole(JOBS),
            Kind::masked(PODS, view::pod_fields()).owned_by("Job"),
        ]
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        live(cache, key).map_or(Ok(Action::AwaitChange), |job| sync_job(store, cache, job))
    }
}

fn sync_job(store: &Store, cache: &Reflector, job: &Value) -> Result<Action, StoreError> {
    let ns = job["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    let uid = job["metadata"]["uid"].as_str().unwrap_or("");
    let spec = &job["spec"];
    let now = now_rfc3339();
    let pods: Vec<Value> = cache.controlled_by(uid, PODS).cloned().collect();
    let live = |p: &&Value| terminal(p).is_none() && p["metadata"]["deletionTimestamp"].is_null();
    let mut active: Vec<Value> = pods.iter().filter(live).cloned().collect();
    let succeeded = pods
        .iter()
        .filter(|p| terminal(p) == Some("Succeeded"))
        .count() as i64;
    let failed_pods = pods
        .iter()
        .filter(|p| terminal(p) == Some("Failed"))
        .count() as i64;
    let finished = has_condition(job, "Complete") || has_condition(job, "Failed");
    let mut conditions: Vec<Value> = job["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut completion_time = job["status"]["completionTime"].clone();
    // Restarts of OnFailure pods count as failures (kube's pastBackoffLimitOnFailure).
    let restarts: i64 = if spec["template"]["spec"]["restartPolicy"] == "OnFailure" {
        active
            .iter()
            .flat_map(|p| {
                p["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .sum()
    } else {
        0
    };
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let completions = spec["completions"].as_i64();
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let suspended = spec["suspend"] == true;
    let job_id = format!("{ns}/{name}");
    if !finished {
        let done = match completions {
            Some(n) => succeeded >= n,
            // A work queue: done once one succeeded and none is left running.
            None => succeeded > 0 && active.is_empty(),
        };
        if failed_pods + restarts > backoff_limit {
            let msg = "Job has reached the specified backoff limit";
            tracing::info!(job = %job_id, failed = failed_pods, restarts, "job failed: backoff limit");
            conditions.push(condition(
                "FailureTarget",
                "BackoffLimitExceeded",
                msg,
                &now,
            ));
            conditions.push(condition("Failed", "BackoffLimitExceeded", msg, &now));
            event(store, job, true, "BackoffLimitExceeded", msg);
        } else if done {
            tracing::info!(job = %job_id, succeeded, "job complete");
            let msg = "Reached expected number of succeeded pods";
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                msg,
                &now,
            ));
            conditions.push(condition("Complete", "CompletionsReached", msg, &now));
            completion_time = json!(now);
            event(store, job, false, "Completed", "Job completed");
        }
    }
    let finished_now = conditions
        .iter()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
    // How many should run: none once finished or suspended; otherwise up to
    // parallelism, and no more than the completions still needed.
    let want = if finished_now || suspended {
        0
    } else {
        match completions {
            Some(n) => parallelism.min((n - succeeded).max(0)),
            None if succeeded > 0 => active.len() as i64,
            None => parallelism,
        }
    } as usize;
    if active.len() < want {
        for _ in active.len()..want {
            let pod = pod_from_template(job, "Job", &spec["template"]);
            if let Some(p) = create(store, "core", "pods", pod)? {
                let pname = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                tracing::debug!(job = %job_id, pod = %pname, "created pod");
                event(
                    store,
                    job,
                    false,
                    "SuccessfulCreate",
                    &format!("Created pod: {pname}"),
                );
                active.push(p);
            }
        }
    } else if active.len() > want {
        // The newest go first.
        active.sort_by_key(|p| {
            std::cmp::Reverse(
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        });
        for p in active.drain(..active.len() - want) {
            let pname = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            super::delete(store, &key_of(&p, "core", "pods"), None)?;
            event(
                store,
                job,
                false,
                "SuccessfulDelete",
                &format!("Deleted pod: {pname}"),
            );
        }
    }
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let mut status = json!({
        "active": active.len(),
        "succeeded": succeeded,
        "failed": failed_pods,
        "ready": ready,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    let start = match &job["status"]["startTime"] {
        Value::Null if !suspended => json!(now),
        v => v.clone(),
    };
    if !start.is_null() {
        status["startTime"] = start;
    }
    if !completion_time.is_null() {
        status["completionTime"] = completion_time;
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    // Zero counts are omitted, as kube's omitempty does.
    for k in ["active", "succeeded", "failed"] {
        if status[k] == 0 {
            status.as_object_mut().expect("object").remove(k);
        }
    }
    if job["status"] != status {
        let mut next = job.clone();
        next["status"] = status;
        update_status(store, &key_of(job, "batch", "jobs"), &next)?;
    }
    Ok(Action::AwaitChange)
}
