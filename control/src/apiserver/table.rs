//! Server-side printing: `kubectl get` asks for a meta.k8s.io/v1 Table and prints our
//! columns (NAME READY STATUS RESTARTS AGE for pods, as kube-apiserver does).

use serde_json::{json, Value};

fn age(obj: &Value, now: std::time::SystemTime) -> String {
    since(&obj["metadata"]["creationTimestamp"], now)
}

/// How long ago an RFC 3339 time was, as kubectl prints it ("<unknown>" without one).
fn since(ts: &Value, now: std::time::SystemTime) -> String {
    let Some(t) = ts.as_str().and_then(|ts| humantime_parse(ts).ok()) else {
        return "<unknown>".into();
    };
    match now.duration_since(t) {
        Ok(d) => human_duration(d.as_secs()),
        // A little in the future (clock skew) reads as now; more is invalid.
        Err(e) if e.duration().as_secs() < 1 => "0s".into(),
        Err(_) => "<invalid>".into(),
    }
}

/// apimachinery's duration.HumanDuration: two units while the larger is small.
pub(crate) fn human_duration(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    let y = d / 365;
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        pair(m, "m", secs % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        pair(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        pair(d, "d", h % 24, "h")
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if y < 8 {
        pair(y, "y", d % 365, "d")
    } else {
        format!("{y}y")
    }
}

/// kube's pod printer: READY counts ready containers (and started restartable init
/// containers), STATUS is the most telling reason (an init container's progress or
/// failure, a container's waiting or terminated reason, Terminating), RESTARTS says
/// when the last one was.
fn pod_columns(o: &Value, now: std::time::SystemTime) -> (String, String, String) {
    let (spec, st) = (&o["spec"], &o["status"]);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let inits = list(&spec["initContainers"]);
    let restartable = |name: &Value| {
        inits
            .iter()
            .any(|c| &c["name"] == name && c["restartPolicy"] == "Always")
    };
    let total = list(&spec["containers"]).len()
        + inits
            .iter()
            .filter(|c| c["restartPolicy"] == "Always")
            .count();
    let phase = st["phase"].as_str().unwrap_or("");
    let mut reason = match st["reason"].as_str() {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => phase.to_string(),
    };
    if list(&st["conditions"])
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut ready = 0usize;
    let mut last_restart: Option<String> = None;
    let mut sidecar_last: Option<String> = None;
    let later = |a: &Option<String>, b: &Value| -> Option<String> {
        match (a, b.as_str()) {
            (Some(x), Some(y)) if y > x.as_str() => Some(y.to_string()),
            (None, Some(y)) => Some(y.to_string()),
            (x, _) => x.clone(),
        }
    };
    let init_statuses = list(&st["initContainerStatuses"]);
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += int(&c["restartCount"]);
        let finished = &c["lastState"]["terminated"]["finishedAt"];
        last_restart = later(&last_restart, finished);
        if restartable(&c["name"]) {
            sidecar_restarts += int(&c["restartCount"]);
            sidecar_last = later(&sidecar_last, finished);
        }
        let (term, wait) = (&c["state"]["terminated"], &c["state"]["waiting"]);
        if term.is_object() && int(&term["exitCode"]) == 0 {
            continue;
        }
        if restartable(&c["name"]) && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = if term.is_object() {
            match term["reason"].as_str() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ if int(&term["signal"]) != 0 => format!("Init:Signal:{}", int(&term["signal"])),
                _ => format!("Init:ExitCode:{}", int(&term["exitCode"])),
            }
        } else if wait["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty() && r != "PodInitializing")
        {
            format!("Init:{}", str_of(&wait["reason"]))
        } else {
            format!("Init:{i}/{}", inits.len())
        };
        break;
    }
    let initialized = list(&st["conditions"])
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last;
        let mut running = false;
        for c in list(&st["containerStatuses"]).iter().rev() {
            restarts += int(&c["restartCount"]);
            last_restart = later(&last_restart, &c["lastState"]["terminated"]["finishedAt"]);
            let (term, wait) = (&c["state"]["terminated"], &c["state"]["waiting"]);
            if wait["reason"].as_str().is_some_and(|r| !r.is_empty()) {
                reason = str_of(&wait["reason"]);
            } else if term["reason"].as_str().is_some_and(|r| !r.is_empty()) {
                reason = str_of(&term["reason"]);
            } else if term.is_object() {
                reason = if int(&term["signal"]) != 0 {
                    format!("Signal:{}", int(&term["signal"]))
                } else {
                    format!("ExitCode:{}", int(&term["exitCode"]))
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = list(&st["conditions"])
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        if st["reason"] == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    let restarts = match (&last_restart, restarts) {
        (Some(t), n) if n != 0 => format!("{n} ({} ago)", since(&Value::from(t.as_str()), now)),
        (_, n) => n.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
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
            let (ready, status, restarts) = pod_columns(o, now);
            vec![
                name,
                c("Ready", ready),
                c("Status", status),
                c("Restarts", restarts),
                a,
                w("IP", or_none(str_of(&st["podIP"]))),
                w("Node", or_none(str_of(&spec["nodeName"]))),
                w("Nominated Node", or_none(str_of(&st["nominatedNodeName"]))),
                w("Readiness Gates", "<none>"),
            ]
        }
        "StatefulSet" => {
            let (cs, images) = containers_and_images(&spec["template"]["spec"]);
            vec![
                name,
                c(
                    "Ready",
                    format!(
                        "{}/{}",
                        int(&st["readyReplicas"]),
                        spec["replicas"].as_i64().unwrap_or(1)
                    ),
                ),
                a,
                w("Containers", cs),
                w("Images", images),
            ]
        }
        "CronJob" => {
            let tpl = &spec["jobTemplate"]["spec"];
            let (cs, images) = containers_and_images(&tpl["template"]["spec"]);
            let last = match st["lastScheduleTime"] {
                Value::Null => "<none>".to_string(),
                ref t => since(t, now),
            };
            vec![
                name,
                c("Schedule", str_of(&spec["schedule"])),
                c("Timezone", or_none(str_of(&spec["timeZone"]))),
                c(
                    "Suspend",
                    if spec["suspend"] == true {
                        "True"
                    } else {
                        "False"
                    },
                ),
                c("Active", st["active"].as_array().map_or(0, Vec::len) as i64),
                c("Last Schedule", last),
                a,
                w("Containers", cs),
                w("Images", images),
                w("Selector", or_none(pairs(&tpl["selector"]["matchLabels"]))),
            ]
        }
        "Job" => {
            let (cs, images) = containers_and_images(&spec["template"]["spec"]);
            let start = st["startTime"]
                .as_str()
                .and_then(|t| humantime_parse(t).ok());
            let end = st["completionTime"]
                .as_str()
                .and_then(|t| humantime_parse(t).ok())
                .unwrap_or(now);
            let duration = start
                .and_then(|s| end.duration_since(s).ok())
                .map(|d| human_duration(d.as_secs()))
                .unwrap_or_default();
            vec![
                name,
                c("Status", super::job::status(o)),
                c("Completions", super::job::completions(o)),
                c("Duration", duration),
                a,
                w("Containers", cs),
                w("Images", images),
                w("Selector", pairs(&spec["selector"]["matchLabels"])),
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

#[cfg(test)]
mod pod_printer_tests {
    use super::*;
    use serde_json::json;

    fn at(secs_ago: u64, now: std::time::SystemTime) -> String {
        let t = now - std::time::Duration::from_secs(secs_ago);
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        jiff::Timestamp::from_second(d)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    #[test]
    fn durations_as_apimachinery_prints_them() {
        for (secs, want) in [
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (180, "3m"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_status_column_as_kube_prints_it() {
        let now = std::time::SystemTime::now();
        let pod = |spec: Value, status: Value| json!({"metadata": {"name": "p"}, "spec": spec, "status": status});
        let one = json!({"containers": [{"name": "c"}]});
        let cases = [
            (
                pod(one.clone(), json!({"phase": "Pending"})),
                ("0/1", "Pending", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Pending", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                ),
                ("0/1", "ContainerCreating", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Pending", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
                ),
                ("0/1", "ImagePullBackOff", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Running", "containerStatuses": [
                    {"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                ),
                ("1/1", "Running", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Succeeded", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                ),
                ("0/1", "Completed", "0"),
            ),
            (
                pod(
                    one.clone(),
                    json!({"phase": "Failed", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 7}}}]}),
                ),
                ("0/1", "ExitCode:7", "0"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "i2", "restartCount": 0, "state": {"running": {}}}],
                      "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}),
                ),
                ("0/1", "Init:1/2", "0"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "i1", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
                ),
                ("0/1", "Init:CrashLoopBackOff", "2"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Failed", "initContainerStatuses": [
                        {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
                ),
                ("0/1", "Init:Error", "0"),
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}),
                    json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                      "initContainerStatuses": [{"name": "side", "restartCount": 0, "started": true, "ready": true, "state": {"running": {}}}],
                      "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                ),
                ("2/2", "Running", "0"),
            ),
        ];
        for (p, (ready, status, restarts)) in cases {
            let got = pod_columns(&p, now);
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2.as_str()),
                (ready, status, restarts),
                "{p}"
            );
        }
        // A crash loop: the restarts say when the last one ended.
        let crash = pod(
            one.clone(),
            json!({"phase": "Running", "containerStatuses": [
            {"name": "c", "ready": false, "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 3, "finishedAt": at(90, now)}}}]}),
        );
        assert_eq!(
            pod_columns(&crash, now),
            (
                "0/1".into(),
                "CrashLoopBackOff".into(),
                "3 (90s ago)".into()
            )
        );
        // Deleted: Terminating, unless it already finished.
        let mut t = pod(one.clone(), json!({"phase": "Running"}));
        t["metadata"]["deletionTimestamp"] = at(1, now).into();
        assert_eq!(pod_columns(&t, now).1, "Terminating");
        t["status"]["phase"] = "Succeeded".into();
        assert_eq!(pod_columns(&t, now).1, "Succeeded");
    }
}
