//! discovery.k8s.io/v1 EndpointSlice.

use super::super::table::{age, c, first_three, int, str_of, Col};
use super::{typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct EndpointSlice;

impl Strategy for EndpointSlice {
    typed_as!(k8s_openapi::api::discovery::v1::EndpointSlice);

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let name = c("Name", o["metadata"]["name"].clone());
        let a = c("Age", age(o, now));

        let ports: Vec<String> = o["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| int(&p["port"]).to_string())
            .collect();
        let addrs: Vec<String> = o["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .map(|a| str_of(&a))
            .collect();
        vec![
            name,
            c("AddressType", str_of(&o["addressType"])),
            c(
                "Ports",
                if ports.is_empty() {
                    "<unset>".into()
                } else {
                    ports.join(",")
                },
            ),
            c("Endpoints", first_three(addrs)),
            a,
        ]
    }
}
