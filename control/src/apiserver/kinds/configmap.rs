//! core/v1 ConfigMap: at most 1 MiB of data; `immutable` freezes it.

use super::super::status::ApiError;
use super::super::table::{age, c, Col};
use super::{check_data_size, data_bytes, immutable_data, typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct ConfigMap;

impl Strategy for ConfigMap {
    typed_as!(k8s_openapi::api::core::v1::ConfigMap);

    fn validate(&self, v: &Value) -> Result<(), ApiError> {
        let total = data_bytes(&v["data"], false) + data_bytes(&v["binaryData"], true);
        check_data_size("ConfigMap", v, total, "[]")
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable_data("ConfigMap", cur, next, &["data", "binaryData"])
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let n = o["data"].as_object().map_or(0, |m| m.len())
            + o["binaryData"].as_object().map_or(0, |m| m.len());
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Data", n),
            c("Age", age(o, now)),
        ]
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::CONFIG_MAP)
    }
}
