//! core/v1 Pod: kube's defaults, what an update may change, and kube's pod printer.

use super::super::status::ApiError;
use super::super::table::{age, c, int, or_none, since, str_of, w, Col};
use super::{set_default, typed_as, Strategy};
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct Pod;

impl Strategy for Pod {
    typed_as!(k8s_openapi::api::core::v1::Pod);

    fn has_status(&self) -> bool {
        true
    }

    // kube-apiserver always gives a pod a securityContext (clients such as kubectl
    // debug read it without a nil check).
    fn defaults(&self, v: &mut Value) {
        set_default(v, &["spec", "securityContext"], json!({}));
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        let name = cur["metadata"]["name"].as_str().unwrap_or("");

        // Only images, activeDeadlineSeconds, added tolerations and a first nodeName
        // may change in a pod's spec.
        let neutral = |v: &Value| {
            let mut s = v["spec"].clone();
            for list in ["containers", "initContainers"] {
                if let Some(cs) = s[list].as_array_mut() {
                    for c in cs {
                        c.as_object_mut().map(|o| o.remove("image"));
                    }
                }
            }
            if let Some(o) = s.as_object_mut() {
                for f in [
                    "activeDeadlineSeconds",
                    "tolerations",
                    "terminationGracePeriodSeconds",
                ] {
                    o.remove(f);
                }
                if v["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
                    o.remove("nodeName");
                }
            }
            s
        };
        let mut before = neutral(cur);
        let after = neutral(next);
        // Binding: a pod without a node may get one.
        if cur["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            if let (Some(b), Some(a)) = (before.as_object_mut(), after.as_object()) {
                if let Some(n) = a.get("nodeName") {
                    b.insert("nodeName".into(), n.clone());
                }
            }
        }
        if before != after {
            return Err(ApiError::invalid("Pod", name, "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds`"));
        }
        Ok(())
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let (ready, status, restarts) = pod_columns(o, now);
        let (spec, st) = (&o["spec"], &o["status"]);
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Ready", ready),
            c("Status", status),
            c("Restarts", restarts),
            c("Age", age(o, now)),
            w("IP", or_none(str_of(&st["podIP"]))),
            w("Node", or_none(str_of(&spec["nodeName"]))),
            w("Nominated Node", or_none(str_of(&st["nominatedNodeName"]))),
            w("Readiness Gates", "<none>"),
        ]
    }
}

/// kube's pod printer: READY counts ready containers (and started restartable init
/// containers), STATUS is the most telling reason (an init container's progress or
/// failure, a container's waiting or terminated reason, Terminating), RESTARTS says
/// when the last one was.
fn pod_columns(o: &Value, now: std::time::SystemTime) -> (String, String, String) {
    let (spec, st) = (&o["spec"], &o["status"]);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let inits = list(&spec["initContainers"]);
    let restartable = |name: &Value| {
        inits
            .iter()
            .any(|c| &c["name"] == name && c["restartPolicy"] == "Always")
    };
    let total = list(&spec["containers"]).len()
        + inits
            .iter()
            .filter(|c| c["restartPolicy"] == "Always")
            .count();
    let phase = st["phase"].as_str().unwrap_or("");
    let mut reason = match st["reason"].as_str() {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => phase.to_string(),
    };
    if list(&st["conditions"])
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut ready = 0usize;
    let mut last_restart: Option<String> = None;
    let mut sidecar_last: Option<String> = None;
    let later = |a: &Option<String>, b: &Value| -> Option<String> {
        match (a, b.as_str()) {
            (Some(x), Some(y)) if y > x.as_str() => Some(y.to_string()),
            (None, Some(y)) => Some(y.to_string()),
            (x, _) => x.clone(),
        }
    };
    let init_statuses = list(&st["initContainerStatuses"]);
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += int(&c["restartCount"]);
        let finished = &c["lastState"]["terminated"]["finishedAt"];
        last_restart = later(&last_restart, finished);
        if restartable(&c["name"]) {
            sidecar_restarts += int(&c["restartCount"]);
            sidecar_last = later(&sidecar_last, finished);
        }
        let (term, wait) = (&c["state"]["terminated"], &c["state"]["waiting"]);
        if term.is_object() && int(&term["exitCode"]) == 0 {
            continue;
        }
        if restartable(&c["name"]) && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = if term.is_object() {
            match term["reason"].as_str() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ if int(&term["signal"]) != 0 => format!("Init:Signal:{}", int(&term["signal"])),
                _ => format!("Init:ExitCode:{}", int(&term["exitCode"])),
            }
        } else if wait["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty() && r != "PodInitializing")
        {
            format!("Init:{}", str_of(&wait["reason"]))
        } else {
            format!("Init:{i}/{}", inits.len())
        };
        break;
    }
    let initialized = list(&st["conditions"])
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last;
        let mut running = false;
        for c in list(&st["containerStatuses"]).iter().rev() {
            restarts += int(&c["restartCount"]);
            last_restart = later(&last_restart, &c["lastState"]["terminated"]["finishedAt"]);
            let (term, wait) = (&c["state"]["terminated"], &c["state"]["waiting"]);
            if wait["reason"].as_str().is_some_and(|r| !r.is_empty()) {
                reason = str_of(&wait["reason"]);
            } else if term["reason"].as_str().is_some_and(|r| !r.is_empty()) {
                reason = str_of(&term["reason"]);
            } else if term.is_object() {
                reason = if int(&term["signal"]) != 0 {
                    format!("Signal:{}", int(&term["signal"]))
                } else {
                    format!("ExitCode:{}", int(&term["exitCode"]))
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = list(&st["conditions"])
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        if st["reason"] == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    let restarts = match (&last_restart, restarts) {
        (Some(t), n) if n != 0 => format!("{n} ({} ago)", since(&Value::from(t.as_str()), now)),
        (_, n) => n.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs_ago: u64, now: std::time::SystemTime) -> String {
        let t = now - std::time::Duration::from_secs(secs_ago);
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        jiff::Timestamp::from_second(d)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    #[test]
    fn pod_status_column_as_kube_prints_it() {
        let now = std::time::SystemTime::now();
        let pod = |spec: Value, status: Value| json!({"metadata": {"name": "p"}, "spec": spec, "status": status});
        let one = json!({"containers": [{"name": "c"}]});
        let cases = [
            (
                pod(one.clone(), json!({"phase": "Pending"})),
                ("0/1", "Pending", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Pending", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                ),
                ("0/1", "ContainerCreating", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Pending", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
                ),
                ("0/1", "ImagePullBackOff", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Running", "containerStatuses": [
                    {"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                ),
                ("1/1", "Running", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Succeeded", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                ),
                ("0/1", "Completed", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Failed", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 7}}}]}),
                ),
                ("0/1", "ExitCode:7", "0"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "i2", "restartCount": 0, "state": {"running": {}}}],
                      "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}),
                ),
                ("0/1", "Init:1/2", "0"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "i1", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
                ),
                ("0/1", "Init:CrashLoopBackOff", "2"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Failed", "initContainerStatuses": [
                        {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
                ),
                ("0/1", "Init:Error", "0"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                      "initContainerStatuses": [{"name": "side", "restartCount": 0, "started": true, "ready": true, "state": {"running": {}}}],
                      "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                ),
                ("2/2", "Running", "0"),
            ),
        ];
        for (p, (ready, status, restarts)) in cases {
            let got = pod_columns(&p, now);
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2.as_str()),
                (ready, status, restarts),
                "{p}"
            );
        }
        // A crash loop: the restarts say when the last one ended.
        let crash = pod(
            one.clone(),
            json!({"phase": "Running", "containerStatuses": [
            {"name": "c", "ready": false, "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 3, "finishedAt": at(90, now)}}}]}),
        );
        assert_eq!(
            pod_columns(&crash, now),
            (
                "0/1".into(),
                "CrashLoopBackOff".into(),
                "3 (90s ago)".into()
            )
        );
        // Deleted: Terminating, unless it already finished.
        let mut t = pod(one.clone(), json!({"phase": "Running"}));
        t["metadata"]["deletionTimestamp"] = at(1, now).into();
        assert_eq!(pod_columns(&t, now).1, "Terminating");
        t["status"]["phase"] = "Succeeded".into();
        assert_eq!(pod_columns(&t, now).1, "Succeeded");
    }
}
