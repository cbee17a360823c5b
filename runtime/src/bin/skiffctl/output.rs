//! Output: aligned tables like crictl's, or JSON/YAML of the CRI messages.

use anyhow::{bail, Result};
use serde::Serialize;

pub fn print_obj<T: Serialize>(v: &T, format: &str) -> Result<()> {
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "yaml" => print!("{}", serde_yaml::to_string(v)?),
        other => bail!("unknown output format {other:?} (json or yaml)"),
    }
    Ok(())
}

/// Columns padded to their widest cell, three spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}   ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn trunc(id: &str, full: bool) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    if full {
        id.to_string()
    } else {
        id.chars().take(13).collect()
    }
}

/// "5 seconds ago", as crictl shows creation times.
pub fn ago(ns: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let s = ((now - ns).max(0) / 1_000_000_000) as u64;
    let (n, unit) = match s {
        0..=1 => return "Less than a second ago".into(),
        2..=119 => (s, "seconds"),
        120..=7199 => (s / 60, "minutes"),
        7200..=172_799 => (s / 3600, "hours"),
        _ => (s / 86400, "days"),
    };
    format!("{n} {unit} ago")
}

pub fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.3}{}", UNITS[u])
            .replace(".000", "")
            .to_string()
    }
}
