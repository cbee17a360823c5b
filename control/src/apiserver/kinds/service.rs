//! core/v1 Service: its ClusterIP (and node ports) reserved on create and kept, and
//! kube's columns.

use super::super::status::ApiError;
use super::super::table::{age, c, int, or_none, pairs, str_of, w, Col};
use super::{invalid, typed_as, Strategy};
use crate::store::Store;
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct Service;

impl Strategy for Service {
    typed_as!(k8s_openapi::api::core::v1::Service);

    fn has_status(&self) -> bool {
        true
    }

    fn reserve(&self, store: &Store, v: &mut Value, key: &str) -> Result<Vec<String>, ApiError> {
        super::super::allocator::allocate(store, v, key)
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        let name = cur["metadata"]["name"].as_str().unwrap_or("");

        let was = cur["spec"]["clusterIP"].as_str().unwrap_or("");
        let now = next["spec"]["clusterIP"].as_str().unwrap_or("");
        if !was.is_empty() && !now.is_empty() && was != now {
            return Err(invalid(
                "Service",
                name,
                "spec.clusterIP",
                &json!(now),
                "field is immutable",
            ));
        }
        Ok(())
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let (spec, st) = (&o["spec"], &o["status"]);
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Type", spec["type"].as_str().unwrap_or("ClusterIP")),
            c("Cluster-IP", or_none(str_of(&spec["clusterIP"]))),
            c("External-IP", service_external(spec, st)),
            c("Port(s)", service_ports(spec)),
            c("Age", age(o, now)),
            w("Selector", or_none(pairs(&spec["selector"]))),
        ]
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::SERVICE)
    }
}

fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) if np > 0 => format!("{}:{np}/{proto}", int(&p["port"])),
                _ => format!("{}/{proto}", int(&p["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn service_external(spec: &Value, status: &Value) -> String {
    let external: Vec<String> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ExternalName" => str_of(&spec["externalName"]),
        "LoadBalancer" => {
            let ingress: Vec<String> = status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| str_of(&i["ip"]) + &str_of(&i["hostname"]))
                .chain(external)
                .collect();
            if ingress.is_empty() {
                "<pending>".into()
            } else {
                ingress.join(",")
            }
        }
        _ => or_none(external.join(",")),
    }
}
