//! apps/v1 ReplicaSet: one replica by default, a selector that may not change, scale.

use super::super::status::ApiError;
use super::super::table::{c, int, Col};
use super::{immutable_selector, set_default, typed_as, workload_columns, Strategy};
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct ReplicaSet;

impl Strategy for ReplicaSet {
    typed_as!(k8s_openapi::api::apps::v1::ReplicaSet);

    fn has_status(&self) -> bool {
        true
    }

    fn defaults(&self, v: &mut Value) {
        set_default(v, &["spec", "replicas"], json!(1));
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable_selector("ReplicaSet", cur, next)
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let (spec, st) = (&o["spec"], &o["status"]);
        workload_columns(
            o,
            now,
            vec![
                c("Desired", spec["replicas"].as_i64().unwrap_or(1)),
                c("Current", int(&st["replicas"])),
                c("Ready", int(&st["readyReplicas"])),
            ],
        )
    }

    fn scalable(&self) -> bool {
        true
    }
}
