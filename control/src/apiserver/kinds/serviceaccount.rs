//! core/v1 ServiceAccount.

use super::super::table::{age, c, Col};
use super::{typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct ServiceAccount;

impl Strategy for ServiceAccount {
    typed_as!(k8s_openapi::api::core::v1::ServiceAccount);

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Secrets", o["secrets"].as_array().map_or(0, Vec::len)),
            c("Age", age(o, now)),
        ]
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::SERVICE_ACCOUNT)
    }
}
