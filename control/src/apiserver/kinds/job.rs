//! batch/v1 Job, the API side in one place (kube's `pkg/registry/batch/job/strategy.go`):
//! defaults, the generated selector and pod labels, validation, what may not change,
//! and the table columns. The controller is `controllers/job.rs`.

use super::super::status::ApiError;
use super::super::table::{
    age, c, containers_and_images, human_duration, humantime_parse, pairs, w, Col,
};
use serde_json::{json, Value};

/// Labels that tie a Job's pods to it (both spellings kube sets).
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

pub fn defaults(v: &mut Value) {
    let spec = &mut v["spec"];
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    if spec["parallelism"].is_null() {
        spec["parallelism"] = json!(1);
    }
    for (k, d) in [
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("manualSelector", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        if spec[k].is_null() {
            spec[k] = d;
        }
    }
}

/// On create, once the Job has its uid: the selector and the template's labels, unless
/// `manualSelector` says the user chose them.
pub fn prepare_for_create(v: &mut Value) {
    if v["spec"]["manualSelector"] == true {
        return;
    }
    let uid = v["metadata"]["uid"].clone();
    let name = v["metadata"]["name"].clone();
    v["spec"]["selector"] = json!({"matchLabels": {CONTROLLER_UID: uid}});
    let labels = &mut v["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    for (k, val) in [
        (CONTROLLER_UID, &uid),
        ("controller-uid", &uid),
        (JOB_NAME, &name),
        ("job-name", &name),
    ] {
        labels[k] = val.clone();
    }
}

pub fn validate(v: &Value) -> Result<(), ApiError> {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let bad = |msg: String| Err(ApiError::invalid("Job", name, &msg));
    let spec = &v["spec"];
    match spec["template"]["spec"]["restartPolicy"].as_str() {
        Some("Never") | Some("OnFailure") => {}
        other => {
            return bad(format!(
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\" (got {other:?})"
            ))
        }
    }
    for k in ["completions", "parallelism", "backoffLimit"] {
        if spec[k].as_i64().is_some_and(|n| n < 0) {
            return bad(format!(
                "spec.{k}: Invalid value: {}: must be greater than or equal to 0",
                spec[k]
            ));
        }
    }
    if spec["completionMode"] == "Indexed" {
        return bad(
            "spec.completionMode: Unsupported value: \"Indexed\": supported values: \"NonIndexed\""
                .into(),
        );
    }
    Ok(())
}

/// What an update may not change (as kube: the selector, the pod template, completions).
pub fn immutable(cur: &Value, next: &Value) -> Result<(), ApiError> {
    let name = cur["metadata"]["name"].as_str().unwrap_or("");
    for (path, what) in [
        ("selector", "spec.selector"),
        ("template", "spec.template"),
        ("completions", "spec.completions"),
    ] {
        if cur["spec"][path] != next["spec"][path] {
            return Err(ApiError::invalid(
                "Job",
                name,
                &format!("{what}: Invalid value: field is immutable"),
            ));
        }
    }
    Ok(())
}

fn condition(o: &Value, kind: &str) -> bool {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// kubectl's STATUS column for a Job (1.28+).
pub fn status(o: &Value) -> &'static str {
    if condition(o, "Failed") {
        "Failed"
    } else if condition(o, "Complete") {
        "Complete"
    } else if o["spec"]["suspend"] == true {
        "Suspended"
    } else if condition(o, "FailureTarget") {
        "FailureTarget"
    } else if condition(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// COMPLETIONS: succeeded/completions (or succeeded/1 of N parallel for a work queue).
pub fn completions(o: &Value) -> String {
    let done = o["status"]["succeeded"].as_i64().unwrap_or(0);
    match o["spec"]["completions"].as_i64() {
        Some(n) => format!("{done}/{n}"),
        None => {
            let p = o["spec"]["parallelism"].as_i64().unwrap_or(1);
            if p > 1 {
                format!("{done}/1 of {p}")
            } else {
                format!("{done}/1")
            }
        }
    }
}

pub struct Job;

impl super::Strategy for Job {
    super::typed_as!(k8s_openapi::api::batch::v1::Job);

    fn has_status(&self) -> bool {
        true
    }

    fn defaults(&self, v: &mut Value) {
        defaults(v)
    }

    fn validate(&self, v: &Value) -> Result<(), ApiError> {
        validate(v)
    }

    fn prepare_for_create(&self, v: &mut Value) {
        prepare_for_create(v)
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable(cur, next)
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::JOB)
    }

    fn columns(&self, o: &Value, now: std::time::SystemTime) -> Vec<Col> {
        let name = c("Name", o["metadata"]["name"].clone());
        let a = c("Age", age(o, now));
        let (spec, st) = (&o["spec"], &o["status"]);

        let (cs, images) = containers_and_images(&spec["template"]["spec"]);
        let start = st["startTime"]
            .as_str()
            .and_then(|t| humantime_parse(t).ok());
        let end = st["completionTime"]
            .as_str()
            .and_then(|t| humantime_parse(t).ok())
            .unwrap_or(now);
        let duration = start
            .and_then(|s| end.duration_since(s).ok())
            .map(|d| human_duration(d.as_secs()))
            .unwrap_or_default();
        vec![
            name,
            c("Status", status(o)),
            c("Completions", completions(o)),
            c("Duration", duration),
            a,
            w("Containers", cs),
            w("Images", images),
            w("Selector", pairs(&spec["selector"]["matchLabels"])),
        ]
    }
}
