//! apps/v1 StatefulSet, the API side in one place (kube's
//! `pkg/registry/apps/statefulset/strategy.go`): defaults, what may not change, and the
//! table columns. The controller is `controllers/statefulset.rs`.

use super::super::status::ApiError;
use super::super::table::{age, c, containers_and_images, int, w, Col};
use serde_json::{json, Value};

pub fn defaults(v: &mut Value) {
    let spec = &mut v["spec"];
    for (k, d) in [
        ("replicas", json!(1)),
        ("podManagementPolicy", json!("OrderedReady")),
        ("revisionHistoryLimit", json!(10)),
        (
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        ),
    ] {
        if spec[k].is_null() {
            spec[k] = d;
        }
    }
    if spec["updateStrategy"]["type"].is_null() {
        spec["updateStrategy"]["type"] = json!("RollingUpdate");
    }
    if spec["updateStrategy"]["type"] == "RollingUpdate"
        && spec["updateStrategy"]["rollingUpdate"]["partition"].is_null()
    {
        spec["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
    }
}

pub fn validate(v: &Value) -> Result<(), ApiError> {
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let spec = &v["spec"];
    let bad = |m: String| Err(ApiError::invalid("StatefulSet", name, &m));
    if spec["selector"]["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
    {
        return bad("spec.selector: Required value".into());
    }
    let labels = &spec["template"]["metadata"]["labels"];
    let selects = spec["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, val)| labels[k] == *val);
    if !selects {
        return bad("spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`".into());
    }
    match spec["template"]["spec"]["restartPolicy"].as_str() {
        None | Some("Always") => {}
        Some(p) => {
            return bad(format!(
                "spec.template.spec.restartPolicy: Unsupported value: \"{p}\": supported values: \"Always\""
            ))
        }
    }
    if !spec["volumeClaimTemplates"].is_null()
        && spec["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    {
        return bad(
            "spec.volumeClaimTemplates: Forbidden: persistent volumes are not served yet".into(),
        );
    }
    Ok(())
}

/// What an update may not change: kube allows only replicas, ordinals, template,
/// updateStrategy, persistentVolumeClaimRetentionPolicy and minReadySeconds.
pub fn immutable(cur: &Value, next: &Value) -> Result<(), ApiError> {
    let name = cur["metadata"]["name"].as_str().unwrap_or("");
    let mutable = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let strip = |v: &Value| {
        let mut s = v["spec"].clone();
        if let Some(o) = s.as_object_mut() {
            for k in mutable {
                o.remove(k);
            }
        }
        s
    };
    if strip(cur) != strip(next) {
        return Err(ApiError::invalid(
            "StatefulSet",
            name,
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
    Ok(())
}

pub struct StatefulSet;

impl super::Strategy for StatefulSet {
    super::typed_as!(k8s_openapi::api::apps::v1::StatefulSet);

    fn has_status(&self) -> bool {
        true
    }

    fn defaults(&self, v: &mut Value) {
        defaults(v)
    }

    fn validate(&self, v: &Value) -> Result<(), ApiError> {
        validate(v)
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable(cur, next)
    }

    fn scalable(&self) -> bool {
        true
    }

    fn columns(&self, o: &Value, now: std::time::SystemTime) -> Vec<Col> {
        let name = c("Name", o["metadata"]["name"].clone());
        let a = c("Age", age(o, now));
        let (spec, st) = (&o["spec"], &o["status"]);

        let (cs, images) = containers_and_images(&spec["template"]["spec"]);
        vec![
            name,
            c(
                "Ready",
                format!(
                    "{}/{}",
                    int(&st["readyReplicas"]),
                    spec["replicas"].as_i64().unwrap_or(1)
                ),
            ),
            a,
            w("Containers", cs),
            w("Images", images),
        ]
    }
}
