//! apps/v1 Deployment: kube's defaults, a selector that may not change, scale.

use super::super::status::ApiError;
use super::super::table::{c, int, Col};
use super::{immutable_selector, set_default, typed_as, workload_columns, Strategy};
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct Deployment;

impl Strategy for Deployment {
    typed_as!(k8s_openapi::api::apps::v1::Deployment);

    fn has_status(&self) -> bool {
        true
    }

    fn defaults(&self, v: &mut Value) {
        set_default(v, &["spec", "replicas"], json!(1));
        set_default(v, &["spec", "revisionHistoryLimit"], json!(10));
        set_default(v, &["spec", "progressDeadlineSeconds"], json!(600));
        set_default(v, &["spec", "strategy", "type"], json!("RollingUpdate"));
        if v["spec"]["strategy"]["type"] == "RollingUpdate" {
            set_default(
                v,
                &["spec", "strategy", "rollingUpdate", "maxSurge"],
                json!("25%"),
            );
            set_default(
                v,
                &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                json!("25%"),
            );
        }
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable_selector("Deployment", cur, next)
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let (spec, st) = (&o["spec"], &o["status"]);
        let ready = format!(
            "{}/{}",
            int(&st["readyReplicas"]),
            spec["replicas"].as_i64().unwrap_or(1)
        );
        workload_columns(
            o,
            now,
            vec![
                c("Ready", ready),
                c("Up-to-date", int(&st["updatedReplicas"])),
                c("Available", int(&st["availableReplicas"])),
            ],
        )
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::DEPLOYMENT)
    }

    fn scalable(&self) -> bool {
        true
    }
}
