//! core/v1 Namespace. Its deletion (Terminating until emptied by the namespace
//! controller) is in the write path's delete.

use super::super::table::{age, c, Col};
use super::{typed_as, Strategy};
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct Namespace;

impl Strategy for Namespace {
    typed_as!(k8s_openapi::api::core::v1::Namespace);

    fn has_status(&self) -> bool {
        true
    }

    // As kube's namespace strategy: every namespace starts Active, held by the
    // namespace controller's finalizer (cleared through finalize once it is emptied).
    fn prepare_for_create(&self, v: &mut Value) {
        v["spec"]["finalizers"] = json!(["kubernetes"]);
        v["status"] = json!({"phase": "Active"});
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Status", o["status"]["phase"].as_str().unwrap_or("Active")),
            c("Age", age(o, now)),
        ]
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::NAMESPACE)
    }
}
