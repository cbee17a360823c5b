//! Container logs as `kubectl logs` shows them: the CRI log records of a container's
//! current (or previous) run, with the kubelet's options: timestamps, tailLines,
//! sinceSeconds/sinceTime, limitBytes, follow.

use k8s_openapi::jiff::Timestamp;
use skiff_cri::logs::parse;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone)]
pub struct Options {
    pub follow: bool,
    pub timestamps: bool,
    pub previous: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub since: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid {0}: {1:?}")]
    Invalid(&'static str, String),
    #[error("previous terminated container {0:?} not found")]
    NoPrevious(String),
    #[error("container {0:?} has no log yet")]
    NoLog(String),
}

impl Options {
    pub fn parse(q: &HashMap<String, String>) -> Result<Options, LogError> {
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let num = |k: &'static str| -> Result<Option<i64>, LogError> {
            q.get(k)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| LogError::Invalid(k, v.clone()))
                })
                .transpose()
        };
        let since = match (num("sinceSeconds")?, q.get("sinceTime")) {
            (Some(s), _) => Some(
                Timestamp::now()
                    .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
                    .map_err(|_| LogError::Invalid("sinceSeconds", s.to_string()))?,
            ),
            (None, Some(t)) => Some(
                t.parse::<Timestamp>()
                    .map_err(|_| LogError::Invalid("sinceTime", t.clone()))?,
            ),
            (None, None) => None,
        };
        Ok(Options {
            follow: flag("follow"),
            timestamps: flag("timestamps"),
            previous: flag("previous"),
            tail_lines: num("tailLines")?.map(|n| n.max(0) as usize),
            limit_bytes: num("limitBytes")?.map(|n| n.max(0) as usize),
            since,
        })
    }
}

/// The runs of a container that have a log (`<dir>/<n>.log`), newest first.
pub fn runs(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Which file to read for these options.
pub fn file(dir: &Path, container: &str, o: &Options) -> Result<(PathBuf, u32), LogError> {
    let runs = runs(dir);
    let n = if o.previous {
        *runs
            .get(1)
            .ok_or_else(|| LogError::NoPrevious(container.into()))?
    } else {
        *runs
            .first()
            .ok_or_else(|| LogError::NoLog(container.into()))?
    };
    Ok((dir.join(format!("{n}.log")), n))
}

/// Turn CRI records into the text kubectl prints; `pending` carries a partial line
/// between calls. Lines older than `since` are dropped.
pub fn render(records: &str, o: &Options, at_line_start: &mut bool) -> String {
    let mut out = String::new();
    for line in records.lines() {
        let Some(r) = parse(line) else { continue };
        if let Some(since) = o.since {
            if r.time.parse::<Timestamp>().is_ok_and(|t| t < since) {
                continue;
            }
        }
        if o.timestamps && *at_line_start {
            out.push_str(r.time);
            out.push(' ');
        }
        out.push_str(r.content);
        *at_line_start = !r.partial;
        if !r.partial {
            out.push('\n');
        }
    }
    out
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_partials_timestamps_tail_and_since() {
        let recs = "2026-01-01T00:00:00.000000000Z stdout P hel\n\
                    2026-01-01T00:00:01.000000000Z stdout F lo\n\
                    2026-01-01T00:00:02.000000000Z stderr F err\n\
                    junk\n";
        let mut start = true;
        assert_eq!(
            render(recs, &Options::default(), &mut start),
            "hello\nerr\n"
        );
        let o = Options {
            timestamps: true,
            ..Default::default()
        };
        let mut start = true;
        let t = render(recs, &o, &mut start);
        assert_eq!(
            t,
            "2026-01-01T00:00:00.000000000Z hello\n2026-01-01T00:00:02.000000000Z err\n"
        );
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(tail("a\n", 0), "");
        let o = Options {
            since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        let mut start = true;
        assert_eq!(render(recs, &o, &mut start), "err\n");
        let q = HashMap::from([("tailLines".to_string(), "x".to_string())]);
        assert!(Options::parse(&q)
            .unwrap_err()
            .to_string()
            .contains("tailLines"));
    }

    #[test]
    fn picks_current_or_previous_run() {
        let d = std::env::temp_dir().join(format!("skiff-logs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for n in [0, 1, 10] {
            std::fs::write(d.join(format!("{n}.log")), "").unwrap();
        }
        assert_eq!(runs(&d), [10, 1, 0]);
        let prev = Options {
            previous: true,
            ..Default::default()
        };
        assert_eq!(file(&d, "c", &prev).unwrap().1, 1);
        assert_eq!(file(&d, "c", &Options::default()).unwrap().1, 10);
        std::fs::remove_dir_all(&d).unwrap();
        assert!(matches!(file(&d, "c", &prev), Err(LogError::NoPrevious(_))));
    }
}
