//! apps/v1 DaemonSet: kube's update-strategy defaults, a selector that may not change.

use super::super::status::ApiError;
use super::super::table::{c, int, or_none, pairs, Col};
use super::{immutable_selector, set_default, typed_as, workload_columns, Strategy};
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct DaemonSet;

impl Strategy for DaemonSet {
    typed_as!(k8s_openapi::api::apps::v1::DaemonSet);

    fn has_status(&self) -> bool {
        true
    }

    fn defaults(&self, v: &mut Value) {
        set_default(v, &["spec", "revisionHistoryLimit"], json!(10));
        set_default(
            v,
            &["spec", "updateStrategy", "type"],
            json!("RollingUpdate"),
        );
        if v["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
            set_default(
                v,
                &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"],
                json!(1),
            );
            set_default(
                v,
                &["spec", "updateStrategy", "rollingUpdate", "maxSurge"],
                json!(0),
            );
        }
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable_selector("DaemonSet", cur, next)
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let (spec, st) = (&o["spec"], &o["status"]);
        workload_columns(
            o,
            now,
            vec![
                c("Desired", int(&st["desiredNumberScheduled"])),
                c("Current", int(&st["currentNumberScheduled"])),
                c("Ready", int(&st["numberReady"])),
                c("Up-to-date", int(&st["updatedNumberScheduled"])),
                c("Available", int(&st["numberAvailable"])),
                c(
                    "Node Selector",
                    or_none(pairs(&spec["template"]["spec"]["nodeSelector"])),
                ),
            ],
        )
    }
}
