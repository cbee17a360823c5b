//! Server-side printing: `kubectl get` asks for a meta.k8s.io/v1 Table and prints our
//! columns (NAME READY STATUS RESTARTS AGE for pods, as kube-apiserver does).

use serde_json::{json, Value};

fn age(obj: &Value, now: std::time::SystemTime) -> String {
    let Some(ts) = obj["metadata"]["creationTimestamp"].as_str() else {
        return "<unknown>".into();
    };
    let Ok(t) = humantime_parse(ts) else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub(crate) fn humantime_parse(ts: &str) -> Result<std::time::SystemTime, ()> {
    // RFC 3339 "YYYY-MM-DDTHH:MM:SSZ"
    let b = ts.as_bytes();
    if b.len() < 20 {
        return Err(());
    }
    let n = |r: std::ops::Range<usize>| ts.get(r).and_then(|s| s.parse::<i64>().ok()).ok_or(());
    let (y, mo, d, h, mi, s) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + s;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64))
}

/// One column of a kind's table: its header, priority (1: only with `-o wide`) and the
/// cell for an object.
struct Col {
    name: &'static str,
    wide: bool,
    cell: Value,
}

fn c(name: &'static str, cell: impl Into<Value>) -> Col {
    Col {
        name,
        wide: false,
        cell: cell.into(),
    }
}

fn w(name: &'static str, cell: impl Into<Value>) -> Col {
    Col {
        name,
        wide: true,
        cell: cell.into(),
    }
}

fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// `k=v,k2=v2`, as kubectl prints selectors and label maps.
fn pairs(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Container names and images of a pod template, comma separated.
fn containers_and_images(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| str_of(&c["name"])).collect();
    let images: Vec<String> = cs.iter().map(|c| str_of(&c["image"])).collect();
    (names.join(","), images.join(","))
}

/// At most three items, then how many more (as kube's printers shorten lists).
fn first_three(items: Vec<String>) -> String {
    match items.len() {
        0 => "<none>".into(),
        n if n <= 3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
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

/// The columns of `kind` with their cells for `o` (for headers alone, `o` is Null).
fn row(kind: &str, o: &Value, now: std::time::SystemTime) -> Vec<Col> {
    let name = c("Name", o["metadata"]["name"].clone());
    let a = c("Age", age(o, now));
    let (spec, st) = (&o["spec"], &o["status"]);
    match kind {
        "Pod" => {
            let statuses = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|s| int(&s["restartCount"])).sum();
            let phase = match o["metadata"]["deletionTimestamp"].is_string() {
                true => "Terminating".to_string(),
                false => st["phase"].as_str().unwrap_or("Pending").to_string(),
            };
            vec![
                name,
                c("Ready", format!("{ready}/{total}")),
                c("Status", phase),
                c("Restarts", restarts),
                a,
                w("IP", or_none(str_of(&st["podIP"]))),
                w("Node", or_none(str_of(&spec["nodeName"]))),
                w("Nominated Node", or_none(str_of(&st["nominatedNodeName"]))),
                w("Readiness Gates", "<none>"),
            ]
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let (cs, images) = containers_and_images(&spec["template"]["spec"]);
            let mut cols = vec![name];
            match kind {
                "Deployment" => cols.extend([
                    c(
                        "Ready",
                        format!(
                            "{}/{}",
                            int(&st["readyReplicas"]),
                            spec["replicas"].as_i64().unwrap_or(1)
                        ),
                    ),
                    c("Up-to-date", int(&st["updatedReplicas"])),
                    c("Available", int(&st["availableReplicas"])),
                ]),
                "ReplicaSet" => cols.extend([
                    c("Desired", spec["replicas"].as_i64().unwrap_or(1)),
                    c("Current", int(&st["replicas"])),
                    c("Ready", int(&st["readyReplicas"])),
                ]),
                _ => cols.extend([
                    c("Desired", int(&st["desiredNumberScheduled"])),
                    c("Current", int(&st["currentNumberScheduled"])),
                    c("Ready", int(&st["numberReady"])),
                    c("Up-to-date", int(&st["updatedNumberScheduled"])),
                    c("Available", int(&st["numberAvailable"])),
                    c(
                        "Node Selector",
                        or_none(pairs(&spec["template"]["spec"]["nodeSelector"])),
                    ),
                ]),
            }
            cols.extend([
                a,
                w("Containers", cs),
                w("Images", images),
                w("Selector", pairs(&spec["selector"]["matchLabels"])),
            ]);
            cols
        }
        "Node" => vec![
            name,
            c("Status", node_status(o)),
            c("Roles", node_roles(o)),
            a,
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
        ],
        "Namespace" => vec![
            name,
            c("Status", st["phase"].as_str().unwrap_or("Active")),
            a,
        ],
        "Service" => vec![
            name,
            c("Type", spec["type"].as_str().unwrap_or("ClusterIP")),
            c("Cluster-IP", or_none(str_of(&spec["clusterIP"]))),
            c("External-IP", service_external(spec, st)),
            c("Port(s)", service_ports(spec)),
            a,
            w("Selector", or_none(pairs(&spec["selector"]))),
        ],
        "Endpoints" => {
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
        "EndpointSlice" => {
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
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, c("Data", n), a]
        }
        "Secret" => vec![
            name,
            c("Type", o["type"].as_str().unwrap_or("Opaque")),
            c("Data", o["data"].as_object().map_or(0, |m| m.len())),
            a,
        ],
        "ServiceAccount" => vec![
            name,
            c("Secrets", o["secrets"].as_array().map_or(0, Vec::len)),
            a,
        ],
        "Lease" => vec![name, c("Holder", str_of(&spec["holderIdentity"])), a],
        "Event" => {
            let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
                .iter()
                .find_map(|k| o[*k].as_str())
                .map(|t| age(&json!({"metadata": {"creationTimestamp": t}}), now))
                .unwrap_or_else(|| age(o, now));
            let obj = &o["involvedObject"];
            vec![
                c("Last Seen", last),
                c("Type", str_of(&o["type"])),
                c("Reason", str_of(&o["reason"])),
                c(
                    "Object",
                    format!(
                        "{}/{}",
                        str_of(&obj["kind"]).to_lowercase(),
                        str_of(&obj["name"])
                    ),
                ),
                c("Message", str_of(&o["message"])),
            ]
        }
        _ => vec![name, a],
    }
}

pub fn table(kind: &str, objects: &[Value], resource_version: i64) -> Value {
    let now = std::time::SystemTime::now();
    let columns: Vec<Value> = row(kind, &Value::Null, now)
        .iter()
        .map(|col| {
            let ty = if col.cell.is_i64() { "integer" } else { "string" };
            let format = if col.name == "Name" { "name" } else { "" };
            json!({"name": col.name, "type": ty, "format": format, "description": "", "priority": col.wide as i32})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = row(kind, o, now).into_iter().map(|c| c.cell).collect();
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version.to_string()}, "columnDefinitions": columns, "rows": rows})
}

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
