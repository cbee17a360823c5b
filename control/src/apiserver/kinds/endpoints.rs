//! core/v1 Endpoints.

use super::super::table::{age, c, first_three, int, str_of, Col};
use super::{typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct Endpoints;

impl Strategy for Endpoints {
    typed_as!(k8s_openapi::api::core::v1::Endpoints);

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let name = c("Name", o["metadata"]["name"].clone());
        let a = c("Age", age(o, now));

        let eps: Vec<String> = o["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| {
                let ports: Vec<i64> = s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| int(&p["port"]))
                    .collect();
                s["addresses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(move |ad| {
                        let ip = str_of(&ad["ip"]);
                        match ports.is_empty() {
                            true => vec![ip],
                            false => ports.iter().map(|p| format!("{ip}:{p}")).collect(),
                        }
                    })
            })
            .collect();
        vec![name, c("Endpoints", first_three(eps)), a]
    }
}
