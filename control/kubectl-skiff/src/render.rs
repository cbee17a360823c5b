//! A trace as a table (times relative to its first step) or as JSON.

use crate::trace::Trace;
use serde_json::json;
use std::time::{Duration, SystemTime};

pub fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

fn origin(t: &Trace) -> Option<SystemTime> {
    t.rows.iter().filter_map(|r| r.start).min()
}

fn offset(origin: Option<SystemTime>, at: Option<SystemTime>) -> Option<Duration> {
    Some(at?.duration_since(origin?).unwrap_or_default())
}

pub fn table(t: &Trace) -> String {
    let origin = origin(t);
    let mut out = format!(
        "POD {} ({}{})\n",
        t.pod,
        if t.phase.is_empty() {
            "Pending"
        } else {
            &t.phase
        },
        t.node
            .as_ref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default()
    );
    let rows: Vec<[String; 5]> = t
        .rows
        .iter()
        .map(|r| {
            [
                r.step.clone(),
                r.by.clone(),
                offset(origin, r.start).map_or("-".into(), |d| format!("+{}", human(d))),
                match (r.pending, r.duration) {
                    (true, _) => "pending".into(),
                    (_, Some(d)) => human(d),
                    (_, None) => "-".into(),
                },
                r.detail.clone(),
            ]
        })
        .collect();
    let head = ["STEP", "BY", "START", "DURATION", "DETAIL"].map(String::from);
    let mut widths = [0usize; 4];
    for r in std::iter::once(&head).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        for (w, c) in widths.iter().zip(r) {
            out += &format!("{c:<w$}   ");
        }
        out += &r[4];
        out = out.trim_end().to_string();
        out.push('\n');
    }
    let end = t
        .rows
        .iter()
        .filter(|r| !r.pending)
        .filter_map(|r| r.end())
        .max();
    let measured: Duration = t.rows.iter().filter_map(|r| r.duration).sum();
    if let (Some(total), false) = (offset(origin, end), t.rows.is_empty()) {
        out += &format!(
            "total {} from the first step to the last (steps {}, waits between them {})\n",
            human(total),
            human(measured.min(total)),
            human(total.saturating_sub(measured))
        );
    }
    out
}

pub fn json(t: &Trace) -> serde_json::Value {
    let origin = origin(t);
    json!({
        "pod": t.pod,
        "node": t.node,
        "phase": t.phase,
        "complete": t.complete(),
        "steps": t.rows.iter().map(|r| json!({
            "step": r.step,
            "by": r.by,
            "start": r.start.map(skiff_apimachinery::trace::micro_time),
            "offsetSeconds": offset(origin, r.start).map(|d| d.as_secs_f64()),
            "durationSeconds": r.duration.map(|d| d.as_secs_f64()),
            "detail": r.detail,
            "pending": r.pending,
        })).collect::<Vec<_>>(),
    })
}
