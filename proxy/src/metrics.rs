//! What the proxy reports: the sync duration histogram and last sync time under
//! kube-proxy's metric names, what is programmed, and health as kube-proxy's
//! /healthz decides it (unhealthy before the first sync, when a queued change has
//! waited longer than the bound, or when no sync has succeeded within it).

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// kube-proxy's buckets: 1 ms doubling to about 16 s.
const BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];

#[derive(Debug, Default)]
struct State {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    failures: u64,
    last_sync_unix: f64,
    last_success: Option<Instant>,
    /// The oldest change not yet programmed.
    queued: Option<Instant>,
    service_ports: usize,
    endpoints: usize,
}

#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change arrived (kept only if older ones are all programmed).
    pub fn queued(&self, at: Instant) {
        let mut s = self.lock();
        s.queued.get_or_insert(at);
    }

    /// A sync that started at `started` took `took`; on success it programmed these
    /// counts, and every change queued before it started.
    pub fn synced(&self, started: Instant, took: Duration, ok: Option<(usize, usize)>) {
        let mut s = self.lock();
        let secs = took.as_secs_f64();
        s.count += 1;
        s.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.counts[i] += 1;
            }
        }
        match ok {
            Some((ports, eps)) => {
                s.last_sync_unix = unix_now();
                s.last_success = Some(started + took);
                s.service_ports = ports;
                s.endpoints = eps;
                if s.queued.is_some_and(|q| q <= started) {
                    s.queued = None;
                }
            }
            None => s.failures += 1,
        }
    }

    /// Healthy at `now` with this bound, and why not.
    pub fn health(&self, now: Instant, bound: Duration) -> Result<(), String> {
        let s = self.lock();
        let Some(last) = s.last_success else {
            return Err("no successful sync yet".into());
        };
        if now.saturating_duration_since(last) > bound {
            return Err(format!(
                "last successful sync {:.1}s ago (bound {:.1}s)",
                now.saturating_duration_since(last).as_secs_f64(),
                bound.as_secs_f64()
            ));
        }
        if let Some(q) = s.queued {
            if now.saturating_duration_since(q) > bound {
                return Err(format!(
                    "a change has waited {:.1}s to be programmed (bound {:.1}s)",
                    now.saturating_duration_since(q).as_secs_f64(),
                    bound.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut o = String::new();
        let h = "kubeproxy_sync_proxy_rules_duration_seconds";
        let _ = writeln!(
            o,
            "# HELP {h} SyncProxyRules latency in seconds\n# TYPE {h} histogram"
        );
        for (b, c) in BUCKETS.iter().zip(s.counts) {
            let _ = writeln!(o, "{h}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(o, "{h}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(o, "{h}_sum {}\n{h}_count {}", s.sum, s.count);
        let gauges = [
            (
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                "The last time proxy rules were successfully synced",
                s.last_sync_unix,
            ),
            (
                "skiff_proxy_programmed_service_ports",
                "Service ports in the rules",
                s.service_ports as f64,
            ),
            (
                "skiff_proxy_programmed_endpoints",
                "Endpoints (service port, address) in the rules",
                s.endpoints as f64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let f = "skiff_proxy_sync_failures_total";
        let _ = writeln!(
            o,
            "# HELP {f} Syncs that failed to program the rules\n# TYPE {f} counter\n{f} {}",
            s.failures
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_health() {
        let m = Metrics::default();
        let t0 = Instant::now();
        let bound = Duration::from_secs(60);
        assert!(m.health(t0, bound).is_err(), "nothing synced yet");
        m.synced(t0, Duration::from_millis(3), Some((10, 20)));
        m.synced(t0, Duration::from_millis(700), None);
        let text = m.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} in {text}"))
                .to_string()
        };
        assert!(
            line("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"}")
                .ends_with(" 0")
        );
        assert!(
            line("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"}")
                .ends_with(" 1")
        );
        assert!(
            line("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"1.024\"}")
                .ends_with(" 2")
        );
        assert!(line("kubeproxy_sync_proxy_rules_duration_seconds_count").ends_with(" 2"));
        assert!(line("skiff_proxy_programmed_endpoints").ends_with(" 20"));
        assert!(line("skiff_proxy_sync_failures_total").ends_with(" 1"));
        assert!(m.health(t0 + Duration::from_secs(1), bound).is_ok());
        // A change queued after the last sync, waiting past the bound: unhealthy.
        m.queued(t0 + Duration::from_secs(1));
        assert!(m.health(t0 + Duration::from_secs(30), bound).is_ok());
        let e = m.health(t0 + Duration::from_secs(62), bound).unwrap_err();
        assert!(e.contains("waited") || e.contains("last successful"), "{e}");
        // Programmed by a sync that started after it: healthy again.
        let t1 = t0 + Duration::from_secs(62);
        m.synced(t1, Duration::from_millis(5), Some((10, 20)));
        assert!(m.health(t1 + Duration::from_secs(1), bound).is_ok());
        assert!(m.health(t1 + Duration::from_secs(120), bound).is_err());
    }
}
