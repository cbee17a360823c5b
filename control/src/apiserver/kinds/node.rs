//! core/v1 Node: kube's columns (status with SchedulingDisabled, roles from labels).

use super::super::table::{age, c, or_none, str_of, w, Col};
use super::{typed_as, Strategy};
use serde_json::Value;
use std::time::SystemTime;

pub struct Node;

impl Strategy for Node {
    typed_as!(k8s_openapi::api::core::v1::Node);

    fn has_status(&self) -> bool {
        true
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let st = &o["status"];
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Status", node_status(o)),
            c("Roles", node_roles(o)),
            c("Age", age(o, now)),
            c("Version", str_of(&st["nodeInfo"]["kubeletVersion"])),
            w("Internal-IP", node_address(o, "InternalIP")),
            w("External-IP", node_address(o, "ExternalIP")),
            w("OS-Image", or_none(str_of(&st["nodeInfo"]["osImage"]))),
            w(
                "Kernel-Version",
                or_none(str_of(&st["nodeInfo"]["kernelVersion"])),
            ),
            w(
                "Container-Runtime",
                or_none(str_of(&st["nodeInfo"]["containerRuntimeVersion"])),
            ),
        ]
    }
}

fn node_status(o: &Value) -> String {
    let ready = o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    match o["spec"]["unschedulable"] == true {
        true => format!("{ready},SchedulingDisabled"),
        false => ready.to_string(),
    }
}

fn node_roles(o: &Value) -> String {
    let roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .map(str::to_string)
        .collect();
    or_none(roles.join(","))
}

fn node_address(o: &Value, kind: &str) -> String {
    or_none(
        o["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .map(|a| str_of(&a["address"]))
            .unwrap_or_default(),
    )
}
