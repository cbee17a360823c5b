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

fn col(name: &str, format: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": "", "priority": 0})
}

fn cells(kind: &str, o: &Value, now: std::time::SystemTime) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let a = json!(age(o, now));
    match kind {
        "Pod" => {
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating".to_string()
            } else {
                o["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string()
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts),
                a,
            ]
        }
        "Deployment" => {
            let s = &o["status"];
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            vec![
                name,
                json!(format!(
                    "{}/{want}",
                    s["readyReplicas"].as_i64().unwrap_or(0)
                )),
                json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
                json!(s["availableReplicas"].as_i64().unwrap_or(0)),
                a,
            ]
        }
        "ReplicaSet" => {
            let s = &o["status"];
            vec![
                name,
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1)),
                json!(s["replicas"].as_i64().unwrap_or(0)),
                json!(s["readyReplicas"].as_i64().unwrap_or(0)),
                a,
            ]
        }
        "Node" => {
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
            vec![name, json!(ready), a]
        }
        "Namespace" => vec![
            name,
            json!(o["status"]["phase"].as_str().unwrap_or("Active")),
            a,
        ],
        _ => vec![name, a],
    }
}

fn columns(kind: &str) -> Vec<Value> {
    let n = col("Name", "name");
    let a = col("Age", "");
    match kind {
        "Pod" => vec![
            n,
            col("Ready", ""),
            col("Status", ""),
            json!({"name": "Restarts", "type": "integer", "format": "", "description": "", "priority": 0}),
            a,
        ],
        "Deployment" => vec![
            n,
            col("Ready", ""),
            col("Up-to-date", ""),
            col("Available", ""),
            a,
        ],
        "ReplicaSet" => vec![
            n,
            col("Desired", ""),
            col("Current", ""),
            col("Ready", ""),
            a,
        ],
        "Node" => vec![n, col("Status", ""), a],
        "Namespace" => vec![n, col("Status", ""), a],
        _ => vec![n, a],
    }
}

pub fn table(kind: &str, objects: &[Value], resource_version: i64) -> Value {
    let now = std::time::SystemTime::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(kind, o, now), "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}))
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version.to_string()}, "columnDefinitions": columns(kind), "rows": rows})
}

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
