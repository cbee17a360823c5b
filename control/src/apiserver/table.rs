//! Server-side printing: `kubectl get` asks for a meta.k8s.io/v1 Table and prints our
//! columns (NAME READY STATUS RESTARTS AGE for pods, as kube-apiserver does).

use serde_json::{json, Value};

pub(crate) fn age(obj: &Value, now: std::time::SystemTime) -> String {
    since(&obj["metadata"]["creationTimestamp"], now)
}

/// How long ago an RFC 3339 time was, as kubectl prints it ("<unknown>" without one).
pub(crate) fn since(ts: &Value, now: std::time::SystemTime) -> String {
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
pub struct Col {
    name: &'static str,
    wide: bool,
    pub(crate) cell: Value,
}

pub(crate) fn c(name: &'static str, cell: impl Into<Value>) -> Col {
    Col {
        name,
        wide: false,
        cell: cell.into(),
    }
}

pub(crate) fn w(name: &'static str, cell: impl Into<Value>) -> Col {
    Col {
        name,
        wide: true,
        cell: cell.into(),
    }
}

pub(crate) fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

pub(crate) fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

pub(crate) fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// `k=v,k2=v2`, as kubectl prints selectors and label maps.
pub(crate) fn pairs(v: &Value) -> String {
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
pub(crate) fn containers_and_images(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| str_of(&c["name"])).collect();
    let images: Vec<String> = cs.iter().map(|c| str_of(&c["image"])).collect();
    (names.join(","), images.join(","))
}

/// At most three items, then how many more (as kube's printers shorten lists).
pub(crate) fn first_three(items: Vec<String>) -> String {
    match items.len() {
        0 => "<none>".into(),
        n if n <= 3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

pub fn table(kind: &str, objects: &[Value], resource_version: i64) -> Value {
    let now = std::time::SystemTime::now();
    let columns: Vec<Value> = super::kinds::of(kind).columns(&Value::Null, now)
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
            let cells: Vec<Value> = super::kinds::of(kind).columns(o, now).into_iter().map(|c| c.cell).collect();
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version.to_string()}, "columnDefinitions": columns, "rows": rows})
}

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

#[cfg(test)]
mod tests {
    use super::*;

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
}
