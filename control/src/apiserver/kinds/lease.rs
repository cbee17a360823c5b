//! coordination.k8s.io/v1 Lease (node heartbeats, leader election).

use super::super::table::{age, c, str_of, Col};
use super::{typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct Lease;

impl Strategy for Lease {
    typed_as!(k8s_openapi::api::coordination::v1::Lease);

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Holder", str_of(&o["spec"]["holderIdentity"])),
            c("Age", age(o, now)),
        ]
    }
}
