//! core/v1 Secret: at most 1 MiB of data; `immutable` freezes it.

use super::super::status::ApiError;
use super::super::table::{age, c, Col};
use super::{check_data_size, data_bytes, immutable_data, typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct Secret;

impl Strategy for Secret {
    typed_as!(k8s_openapi::api::core::v1::Secret);

    fn validate(&self, v: &Value) -> Result<(), ApiError> {
        let total = data_bytes(&v["data"], true) + data_bytes(&v["stringData"], false);
        check_data_size("Secret", v, total, "data")
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        immutable_data("Secret", cur, next, &["data", "binaryData"])
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Type", o["type"].as_str().unwrap_or("Opaque")),
            c("Data", o["data"].as_object().map_or(0, |m| m.len())),
            c("Age", age(o, now)),
        ]
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::SECRET)
    }
}
