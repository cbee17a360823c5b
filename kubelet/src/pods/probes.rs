//! Container probes, as the kubelet runs them: startup, liveness and readiness, each an
//! exec (through the CRI's ExecSync), an HTTP GET or a TCP connect from the node to the
//! pod IP, with Kubernetes' timing (initialDelaySeconds, periodSeconds, timeoutSeconds)
//! and thresholds. A failed startup or liveness probe gets the container killed, and it
//! restarts per restartPolicy; readiness decides the pod's Ready condition.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// One probe's running tally for one container run.
#[derive(Debug, Default, Clone)]
struct Tally {
    last: Option<Instant>,
    successes: u32,
    failures: u32,
    /// The thresholded result: None until decided.
    ok: Option<bool>,
}

/// The probe state of one container run (keyed by CRI container id: a restart starts over).
#[derive(Debug, Default, Clone)]
pub struct RunState {
    tallies: HashMap<Kind, Tally>,
}

/// What the probes say about a running container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub started: bool,
    pub ready: bool,
    /// Kill it: which probe failed, and why.
    pub kill: Option<(Kind, String)>,
}

/// How to reach the container for exec probes.
pub trait Exec {
    /// Exit code of `cmd` in the container, or an error text.
    fn exec(
        &self,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<i32, String>> + Send;
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Run one probe once: Ok(()) or the failure's description.
pub async fn run_once(
    c: &Container,
    probe: &Probe,
    pod_ip: &str,
    exec: &impl Exec,
) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match exec.exec(cmd.clone(), timeout).await? {
            0 => Ok(()),
            code => Err(format!("command {cmd:?} exited with {code}")),
        };
    }
    if let Some(h) = &probe.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err("HTTPS probes are not supported yet".into());
        }
        let host = h
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let port = port(c, &h.port)?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for hd in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
        }
        req.push_str("\r\n");
        let get = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            s.write_all(req.as_bytes()).await?;
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let m = s.read(&mut head[n..]).await?;
                if m == 0 {
                    break;
                }
                n += m;
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).to_string())
        };
        let line = tokio::time::timeout(timeout, get)
            .await
            .map_err(|_| format!("Get http://{host}:{port}{path}: timeout after {timeout:?}"))?
            .map_err(|e| format!("Get http://{host}:{port}{path}: {e}"))?;
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get http://{host}:{port}{path}: not an HTTP answer"))?;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let port = port(c, &t.port)?;
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: timeout")),
        };
    }
    if probe.grpc.is_some() {
        return Err("gRPC probes are not supported yet".into());
    }
    Err("probe has no handler".into())
}

impl RunState {
    /// Run the probes that are due for a container that has been running since
    /// `started_at`, and say what they conclude.
    pub async fn check(
        &mut self,
        c: &Container,
        started_at: Instant,
        pod_ip: &str,
        exec: &impl Exec,
    ) -> Verdict {
        let now = Instant::now();
        let mut started = true;
        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            let Some(p) = kind.of(c) else { continue };
            // Until the startup probe succeeds, the others wait.
            if kind != Kind::Startup && !started {
                continue;
            }
            let t = self.tallies.entry(kind).or_default();
            if kind == Kind::Startup && t.ok == Some(true) {
                continue; // a startup probe stops once it succeeded
            }
            let due = now.duration_since(started_at) >= secs(p.initial_delay_seconds, 0)
                && t.last
                    .is_none_or(|l| now.duration_since(l) >= secs(p.period_seconds, 10));
            if due {
                t.last = Some(now);
                match run_once(c, p, pod_ip, exec).await {
                    Ok(()) => {
                        t.successes += 1;
                        t.failures = 0;
                        // Liveness and startup need a single success.
                        let need = if kind == Kind::Readiness {
                            p.success_threshold.unwrap_or(1).max(1) as u32
                        } else {
                            1
                        };
                        if t.successes >= need {
                            t.ok = Some(true);
                        }
                    }
                    Err(why) => {
                        t.failures += 1;
                        t.successes = 0;
                        if t.failures >= p.failure_threshold.unwrap_or(3).max(1) as u32 {
                            t.ok = Some(false);
                            if kind != Kind::Readiness {
                                return Verdict {
                                    started: kind != Kind::Startup,
                                    ready: false,
                                    kill: Some((kind, why)),
                                };
                            }
                        }
                    }
                }
            }
            if kind == Kind::Startup {
                started = t.ok == Some(true);
            }
        }
        let ready = started
            && match c.readiness_probe {
                Some(_) => self.tallies.get(&Kind::Readiness).and_then(|t| t.ok) == Some(true),
                None => true,
            };
        Verdict {
            started,
            ready,
            kill: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    struct Fake(AtomicI32);
    impl Exec for Fake {
        async fn exec(&self, _: Vec<String>, _: Duration) -> Result<i32, String> {
            Ok(self.0.load(Ordering::SeqCst))
        }
    }

    fn container(probes: serde_json::Value) -> Container {
        let mut v =
            serde_json::json!({"name": "c", "ports": [{"name": "web", "containerPort": 8080}]});
        v.as_object_mut()
            .unwrap()
            .extend(probes.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn thresholds_startup_gating_and_kill() {
        let exec = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 0, "failureThreshold": 2});
        let c = container(serde_json::json!({
            "startupProbe": exec, "livenessProbe": exec, "readinessProbe": exec
        }));
        let fake = Fake(AtomicI32::new(1));
        let mut st = RunState::default();
        let t0 = Instant::now();
        // Startup fails once: not started, not ready, not killed yet.
        let v = st.check(&c, t0, "", &fake).await;
        assert_eq!(
            (v.started, v.ready, v.kill.is_some()),
            (false, false, false)
        );
        fake.0.store(0, Ordering::SeqCst);
        let v = st.check(&c, t0, "", &fake).await;
        assert_eq!((v.started, v.ready, v.kill.is_some()), (true, true, false));
        // Liveness fails twice: kill.
        fake.0.store(1, Ordering::SeqCst);
        assert!(st.check(&c, t0, "", &fake).await.kill.is_none());
        let v = st.check(&c, t0, "", &fake).await;
        let (kind, why) = v.kill.unwrap();
        assert_eq!(kind, Kind::Liveness);
        assert!(why.contains("exited with 1"), "{why}");
        // A startup probe that never succeeds kills too.
        let mut st = RunState::default();
        let c = container(serde_json::json!({"startupProbe": exec}));
        st.check(&c, t0, "", &fake).await;
        assert_eq!(
            st.check(&c, t0, "", &fake).await.kill.unwrap().0,
            Kind::Startup
        );
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /ok ") && req.contains("X-Test: 1") {
                    200
                } else {
                    503
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let fake = Fake(AtomicI32::new(0));
        let c = container(serde_json::json!({}));
        let probe = |path: &str| -> Probe {
            serde_json::from_value(serde_json::json!({"httpGet": {"path": path, "port": p, "httpHeaders": [{"name": "X-Test", "value": "1"}]}})).unwrap()
        };
        run_once(&c, &probe("/ok"), "127.0.0.1", &fake)
            .await
            .unwrap();
        let e = run_once(&c, &probe("/bad"), "127.0.0.1", &fake)
            .await
            .unwrap_err();
        assert!(e.contains("503"), "{e}");
        let tcp: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": p}})).unwrap();
        run_once(&c, &tcp, "127.0.0.1", &fake).await.unwrap();
        let named: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "web"}})).unwrap();
        // Port 8080 by name; nothing listens there (or something else does): either way it resolves.
        let r = run_once(&c, &named, "127.0.0.1", &fake).await;
        assert!(r.is_ok() || r.unwrap_err().contains(":8080"));
        let unknown: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "nope"}})).unwrap();
        assert!(run_once(&c, &unknown, "127.0.0.1", &fake)
            .await
            .unwrap_err()
            .contains("nope"));
    }
}
