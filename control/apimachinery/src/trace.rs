//! A pod's path through the cluster, as each component measured its own step. A step is
//! recorded on the Event the component posts anyway (Scheduled, Created, Started, …):
//! `eventTime` says when the step began (microseconds), and two annotations say how long
//! it took and what it found. `kubectl skiff trace` reads them back. Components that post
//! no event for a step put the same annotations on the object they write instead.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// When the step began (RFC 3339, microseconds).
pub const START: &str = "trace.skiff.dev/start";
/// How long the step took, in seconds (a decimal).
pub const DURATION: &str = "trace.skiff.dev/duration";
/// What the step found or chose, in words (filters and the chosen node, the pod IP…).
pub const DETAIL: &str = "trace.skiff.dev/detail";
/// When the kubelet first saw the pod (on its sandbox event).
pub const SEEN: &str = "trace.skiff.dev/seen";

/// One measured step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub start: SystemTime,
    pub duration: Duration,
    pub detail: Option<String>,
}

/// A time as Kubernetes' MicroTime (`2026-12-07T17:05:29.123456Z`).
pub fn micro_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A Time or MicroTime (any RFC 3339 form the API serves).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}

impl Step {
    /// A step that began at `start` and ends now.
    pub fn since(start: SystemTime) -> Step {
        let duration = SystemTime::now().duration_since(start).unwrap_or_default();
        Step {
            start,
            duration,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Step {
        self.detail = Some(detail.into());
        self
    }

    pub fn end(&self) -> SystemTime {
        self.start + self.duration
    }

    /// The annotations that carry it.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (START.to_string(), micro_time(self.start)),
            (
                DURATION.to_string(),
                format!("{:.6}", self.duration.as_secs_f64()),
            ),
        ]);
        if let Some(d) = &self.detail {
            a.insert(DETAIL.to_string(), d.clone());
        }
        a
    }

    /// Read one back; None when the annotations do not carry a step.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Option<Step> {
        let start = parse_time(a.get(START)?)?;
        let secs: f64 = a.get(DURATION)?.parse().ok()?;
        Some(Step {
            start,
            duration: Duration::try_from_secs_f64(secs).ok()?,
            detail: a.get(DETAIL).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_survives_its_annotations() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456);
        let s = Step {
            start,
            duration: Duration::from_micros(12_345),
            detail: Some("3/3 nodes fit".into()),
        };
        let a = s.annotations();
        assert_eq!(a[START], "2026-11-30T00:53:20.123456Z");
        assert_eq!(a[DURATION], "0.012345");
        assert_eq!(Step::from_annotations(&a), Some(s));
        assert_eq!(Step::from_annotations(&BTreeMap::new()), None);
        // Second-precision Times parse too (creationTimestamp).
        assert_eq!(
            parse_time("2026-11-30T00:53:20Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000))
        );
    }
}
