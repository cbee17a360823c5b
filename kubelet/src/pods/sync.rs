//! One pod's sync: observe what the runtime holds, run the probes that are due, ask the
//! planner, carry its steps out, post the status.

use super::plan::{self, Action, Plan, StopReason};
use super::{cri_config, labels, now_nanos, probes, sources, status, volumes};
use super::{Found, Kubelet, Observed, SyncError};
use crate::cri::Cri;
use crate::events::Kind;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use skiff_apimachinery::trace::{self, Step};
use skiff_cri::v1;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Exec probes run through the CRI's ExecSync.
struct CriExec<'a, R> {
    cri: &'a R,
    id: String,
}

impl<R: Cri> probes::Exec for CriExec<'_, R> {
    async fn exec(&self, cmd: Vec<String>, timeout: Duration) -> Result<i32, String> {
        let r = self
            .cri
            .exec_sync(v1::ExecSyncRequest {
                container_id: self.id.clone(),
                cmd,
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|e| e.message().to_string())?;
        Ok(r.exit_code)
    }
}

impl<R: Cri> Kubelet<R> {
    pub(super) async fn sync_pod(
        &self,
        pod: &Pod,
        (sandboxes, containers): Found,
    ) -> Result<(), SyncError> {
        let uid = cri_config::pod_uid(pod).to_string();
        let finished = plan::finished(pod);
        let mut obs = Observed {
            sandboxes,
            ..Default::default()
        };
        if !finished {
            obs.containers = self.statuses(&containers).await?;
            if let Some(id) = obs.ready_sandbox().map(|s| s.id.clone()) {
                let ip = self.sandbox_ip(&id).await?;
                obs.probed = self.probe_running(pod, &containers, &obs, &id, &ip).await;
                obs.sandbox_ip = Some(ip);
            }
        }
        let plan = plan::compute(&plan::Input {
            pod,
            containers: &containers,
            observed: &obs,
            backoff: &self.state.lock().unwrap().backoff,
            now: now_nanos(),
        });
        if !plan.actions.is_empty() {
            tracing::debug!(
                namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
                pod = pod.metadata.name.as_deref().unwrap_or(""),
                uid = %uid,
                actions = ?plan.actions,
                "plan"
            );
        }
        self.act(pod, &plan, &mut obs).await?;
        if finished {
            return Ok(());
        }
        self.refresh_volumes(pod).await;
        if !plan.actions.is_empty() {
            let mine = self
                .cri
                .list_containers(v1::ListContainersRequest {
                    filter: Some(v1::ContainerFilter {
                        label_selector: HashMap::from([(labels::POD_UID.to_string(), uid.clone())]),
                        ..Default::default()
                    }),
                })
                .await?
                .containers;
            obs.containers = self.statuses(&mine).await?;
        }
        obs.waiting = self
            .state
            .lock()
            .unwrap()
            .waiting
            .get(&uid)
            .cloned()
            .unwrap_or_default();
        self.report(pod, &obs).await
    }

    /// Carry out a plan's steps in order; a step the runtime refuses for the container
    /// alone (a bad image, a create error) becomes its waiting reason, an unreachable
    /// runtime ends the pass.
    async fn act(&self, pod: &Pod, plan: &Plan, obs: &mut Observed) -> Result<(), SyncError> {
        let uid = cri_config::pod_uid(pod);
        for (name, why) in &plan.waiting {
            self.set_waiting(
                uid,
                name,
                why.as_ref().map(|(r, m)| (r.as_str(), m.clone())),
            );
        }
        let mut sandbox = obs.ready_sandbox().map(|s| s.id.clone());
        for a in &plan.actions {
            match a {
                Action::StopSandbox { id } => {
                    self.cri
                        .stop_pod_sandbox(v1::StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await?;
                }
                Action::CreateSandbox { attempt } => {
                    let id = self.create_sandbox(pod, *attempt).await?;
                    obs.sandbox_ip = Some(self.sandbox_ip(&id).await?);
                    sandbox = Some(id);
                }
                Action::StopContainer {
                    id,
                    name,
                    grace,
                    why,
                } => {
                    if let StopReason::Probe(kind, _) = why {
                        let msg = format!(
                            "Container {name} failed {} probe, will be restarted",
                            kind.name().to_lowercase()
                        );
                        self.event(pod, name, false, "Killing", msg).await;
                    }
                    self.cri
                        .stop_container(v1::StopContainerRequest {
                            container_id: id.clone(),
                            timeout: *grace,
                        })
                        .await?;
                    self.state.lock().unwrap().probes.remove(id);
                }
                Action::RemoveContainer { id } => {
                    // A run that cannot be removed now is removed at a later restart.
                    let r = self
                        .cri
                        .remove_container(v1::RemoveContainerRequest {
                            container_id: id.clone(),
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(container = %id, error = %e, "remove old run");
                    }
                    let mut st = self.state.lock().unwrap();
                    st.statuses.remove(id);
                    st.probes.remove(id);
                }
                Action::StartContainer { id, name } => {
                    self.start(pod, name, id).await?;
                }
                Action::CreateContainer {
                    name,
                    init,
                    attempt,
                    restart,
                } => {
                    let spec = pod.spec.as_ref();
                    let list = if *init {
                        spec.and_then(|s| s.init_containers.as_deref())
                    } else {
                        spec.map(|s| s.containers.as_slice())
                    };
                    let (Some(c), Some(sb)) = (
                        list.unwrap_or(&[]).iter().find(|c| &c.name == name),
                        &sandbox,
                    ) else {
                        continue;
                    };
                    if let Some(ran) = restart {
                        let key = (uid.to_string(), name.clone());
                        self.state.lock().unwrap().backoff.restarted(key, *ran);
                    }
                    let ip = obs.sandbox_ip.clone().unwrap_or_default();
                    self.create_and_start(pod, c, *attempt, sb, &ip).await?;
                }
            }
        }
        Ok(())
    }

    /// Run the pod's sandbox and learn its IP; a SandboxReady event reports the step
    /// with what the runtime measured (namespaces, CNI ADD) and when this kubelet first
    /// saw the pod.
    async fn create_sandbox(&self, pod: &Pod, attempt: u32) -> Result<String, SyncError> {
        let config = cri_config::sandbox_config(&self.cfg, pod, attempt);
        let t0 = SystemTime::now();
        let id = self
            .cri
            .run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .pod_sandbox_id;
        let (ip, info) = self.sandbox_status(&id, true).await?;
        let mut detail = format!(
            "IP {}",
            if ip.is_empty() {
                "none (host network)"
            } else {
                &ip
            }
        );
        if let Some(t) = info["timings"].as_object() {
            let ms = |k: &str| t.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0) * 1000.0;
            detail += &format!(
                "; namespaces {:.1} ms, CNI ADD {:.1} ms",
                ms("namespacesSeconds"),
                ms("cniAddSeconds")
            );
        }
        if let Some(netns) = info["netns"].as_str() {
            detail += &format!("; netns {netns}");
        }
        let step = Step::since(t0).with_detail(detail);
        tracing::info!(
            namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            uid = cri_config::pod_uid(pod),
            sandbox = %id,
            attempt,
            ms = step.duration.as_secs_f64() * 1000.0,
            "sandbox created"
        );
        let seen = self
            .state
            .lock()
            .unwrap()
            .seen
            .get(cri_config::pod_uid(pod))
            .map(|t| trace::micro_time(*t));
        let extra: Vec<(&str, String)> = seen.into_iter().map(|s| (trace::SEEN, s)).collect();
        let short = &id[..id.len().min(13)];
        crate::events::record_as(
            &self.client,
            &self.cfg.node_name,
            pod,
            None,
            Kind::Step(&step, &extra),
            "SandboxReady",
            format!("Pod sandbox {short} is ready"),
        )
        .await;
        Ok(id)
    }

    /// Run the due probes of the app containers running in the pod's sandbox; what they
    /// say, by container name. A failure that kills is announced here (Unhealthy); the
    /// planner decides the kill.
    async fn probe_running(
        &self,
        pod: &Pod,
        containers: &[v1::Container],
        obs: &Observed,
        sandbox: &str,
        ip: &str,
    ) -> HashMap<String, probes::Verdict> {
        let mut out = HashMap::new();
        let spec = pod
            .spec
            .as_ref()
            .map_or(&[][..], |s| s.containers.as_slice());
        for c in spec {
            if c.startup_probe.is_none()
                && c.liveness_probe.is_none()
                && c.readiness_probe.is_none()
            {
                continue;
            }
            let Some(s) = obs.attempts(&c.name).first().copied() else {
                continue;
            };
            let current = containers
                .iter()
                .any(|x| x.id == s.id && x.pod_sandbox_id == sandbox);
            if !current || s.state != v1::ContainerState::ContainerRunning as i32 {
                continue;
            }
            let mut run = self
                .state
                .lock()
                .unwrap()
                .probes
                .remove(&s.id)
                .unwrap_or_default();
            let ago = Duration::from_nanos((now_nanos() - s.started_at).max(0) as u64);
            let started = std::time::Instant::now()
                .checked_sub(ago)
                .unwrap_or_else(std::time::Instant::now);
            let exec = CriExec {
                cri: &self.cri,
                id: s.id.clone(),
            };
            let v = run.check(c, started, ip, &exec).await;
            self.state.lock().unwrap().probes.insert(s.id.clone(), run);
            if let Some((kind, why)) = &v.kill {
                let msg = format!("{} probe failed: {why}", kind.name());
                self.event(pod, &c.name, true, "Unhealthy", msg).await;
            }
            out.insert(c.name.clone(), v);
        }
        out
    }

    /// Full statuses of a pod's containers (unchanged ones from the cache).
    async fn statuses(
        &self,
        containers: &[v1::Container],
    ) -> Result<Vec<v1::ContainerStatus>, SyncError> {
        let mut out = Vec::new();
        for c in containers {
            let cached = self
                .state
                .lock()
                .unwrap()
                .statuses
                .get(&c.id)
                .filter(|s| s.state == c.state)
                .cloned();
            if let Some(s) = cached {
                out.push(s);
                continue;
            }
            let r = self
                .cri
                .container_status(v1::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await;
            match r {
                Ok(r) => {
                    if let Some(s) = r.status {
                        let mut st = self.state.lock().unwrap();
                        if s.state == v1::ContainerState::ContainerExited as i32 {
                            st.probes.remove(&c.id);
                        }
                        // Cached only when it agrees with the list it will be checked against.
                        if s.state == c.state {
                            st.statuses.insert(c.id.clone(), s.clone());
                        }
                        out.push(s);
                    }
                }
                // Removed between the list and now.
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String, SyncError> {
        if let Some(ip) = self.state.lock().unwrap().ips.get(id) {
            return Ok(ip.clone());
        }
        Ok(self.sandbox_status(id, false).await?.0)
    }

    /// A sandbox's IP (remembered: fixed for its life) and, when `verbose`, the
    /// runtime's verbose info (its `info` JSON).
    async fn sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(String, serde_json::Value), SyncError> {
        let s = self
            .cri
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose,
            })
            .await?;
        let info = s
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        let ip = s
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        self.state
            .lock()
            .unwrap()
            .ips
            .insert(id.to_string(), ip.clone());
        Ok((ip, info))
    }

    /// Post the pod's status if it changed since the last post.
    async fn report(&self, pod: &Pod, obs: &Observed) -> Result<(), SyncError> {
        let uid = cri_config::pod_uid(pod).to_string();
        let mut base = pod.clone();
        if let Some(prev) = self.state.lock().unwrap().reported.get(&uid) {
            base.status = Some(prev.clone());
        }
        let status = status::compute(&base, obs, &self.cfg.node_ip.to_string());
        if base.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let patch = serde_json::json!({ "status": status });
        self.api(pod)
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let first = ready && self.state.lock().unwrap().ready_noted.insert(uid.clone());
        self.state.lock().unwrap().reported.insert(uid, status);
        if first {
            self.note_ready(pod, obs).await;
        }
        Ok(())
    }

    /// Keep configMap and secret volumes of a running pod in step with the API (the
    /// kubelet's periodic sync does the same); errors wait for the next round.
    async fn refresh_volumes(&self, pod: &Pod) {
        let has = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| v.config_map.is_some() || v.secret.is_some());
        let uid = cri_config::pod_uid(pod).to_string();
        {
            let mut st = self.state.lock().unwrap();
            let now = std::time::Instant::now();
            match st.refreshed.get(&uid) {
                _ if !has => return,
                Some(t) if now.duration_since(*t) < self.cfg.sync_frequency => return,
                _ => {
                    st.refreshed.insert(uid.clone(), now);
                }
            }
        }
        // Only pods whose volumes exist already (their containers were created).
        if !volumes::pod_dir(&self.cfg.root_dir, &uid).exists() {
            return;
        }
        let r = match sources::fetch(&self.client, pod).await {
            Ok(src) => volumes::prepare(&self.cfg.root_dir, pod, &src)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = r {
            tracing::warn!(uid = %uid, error = %e, "refresh volumes");
        }
    }

    /// The pod became Ready: a PodReady event whose step runs from its last container's
    /// start to now (the wait for readiness probes).
    async fn note_ready(&self, pod: &Pod, obs: &Observed) {
        let last_start = obs
            .containers
            .iter()
            .map(|c| c.started_at)
            .max()
            .unwrap_or(0);
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(last_start.max(0) as u64);
        let probes = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter(|c| c.readiness_probe.is_some())
            .count();
        let detail = match probes {
            0 => "no readiness probes".to_string(),
            n => format!("{n} readiness probe(s) passed"),
        };
        let step = Step::since(start).with_detail(detail);
        crate::events::record_as(
            &self.client,
            &self.cfg.node_name,
            pod,
            None,
            Kind::Step(&step, &[]),
            "PodReady",
            "Pod is ready".into(),
        )
        .await;
    }
}
