//! Pods: the sync loop that makes the runtime match the pods bound to this node.
//!
//! Each pass lists the runtime's sandboxes and containers (as the kubelet's PLEG relists)
//! and, for every pod, works towards its spec one step at a time: a sandbox, the image,
//! each container, a restart per restartPolicy once its back-off allows; then posts the
//! status. A pod marked for deletion is stopped within its grace period and then removed
//! from the API (the graceful-deletion handshake); sandboxes whose pod is gone are
//! removed. One task per pod, so a slow pull or stop holds up only its own pod.

pub mod cri_config;
pub mod probes;
pub mod sources;
pub mod status;
pub mod volumes;

use crate::backoff::{Backoff, Retry, Verdict};
use crate::labels;
use crate::Config;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use skiff_runtime::cri::client::Clients;
use skiff_runtime::cri::v1;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the runtime holds for one pod, plus the reasons the sync loop has for containers
/// that are not running.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub sandboxes: Vec<v1::PodSandbox>,
    pub sandbox_ip: Option<String>,
    pub containers: Vec<v1::ContainerStatus>,
    /// Container name → (waiting reason, message).
    pub waiting: HashMap<String, (String, String)>,
    /// Container name → what its probes say (running containers with probes only).
    pub probed: HashMap<String, probes::Verdict>,
}

fn attempt_of(s: &v1::ContainerStatus) -> u32 {
    s.metadata.as_ref().map_or(0, |m| m.attempt)
}

fn name_of(s: &v1::ContainerStatus) -> &str {
    s.metadata.as_ref().map_or("", |m| m.name.as_str())
}

impl Observed {
    /// A container's runs, newest first.
    pub fn attempts(&self, name: &str) -> Vec<&v1::ContainerStatus> {
        let mut v: Vec<_> = self
            .containers
            .iter()
            .filter(|c| name_of(c) == name)
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse((attempt_of(c), c.created_at)));
        v
    }

    pub fn ready_sandbox(&self) -> Option<&v1::PodSandbox> {
        self.sandboxes
            .iter()
            .filter(|s| s.state == v1::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| (s.metadata.as_ref().map_or(0, |m| m.attempt), s.created_at))
    }

    pub fn sandbox_ready(&self) -> bool {
        self.ready_sandbox().is_some()
    }

    pub fn pod_ip(&self) -> Option<String> {
        self.sandbox_ip.clone().filter(|ip| !ip.is_empty())
    }
}

#[derive(Default)]
struct State {
    backoff: Backoff,
    /// Failed image pulls and container creates wait before the next try.
    retry: Retry,
    /// Pods with a task working on them.
    busy: HashSet<String>,
    /// uid → the status last posted.
    reported: HashMap<String, PodStatus>,
    /// uid → container name → why it is not running.
    waiting: HashMap<String, HashMap<String, (String, String)>>,
    /// Sandbox id → IP (fixed for a sandbox's life).
    ips: HashMap<String, String>,
    /// Container statuses by id. A status holds while the runtime's list shows the
    /// container in the same state (a running one's start time and image do not
    /// change), so a sync pass asks ContainerStatus only of containers that changed.
    statuses: HashMap<String, v1::ContainerStatus>,
    /// Container id → its probes' state.
    probes: HashMap<String, probes::RunState>,
    /// uid → when its configMap and secret volumes were last rewritten.
    refreshed: HashMap<String, std::time::Instant>,
}

/// Exec probes run through the CRI's ExecSync.
struct CriExec {
    rt: skiff_runtime::cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    id: String,
}

impl probes::Exec for CriExec {
    async fn exec(&self, cmd: Vec<String>, timeout: Duration) -> Result<i32, String> {
        let r = self
            .rt
            .clone()
            .exec_sync(v1::ExecSyncRequest {
                container_id: self.id.clone(),
                cmd,
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|e| e.message().to_string())?;
        Ok(r.into_inner().exit_code)
    }
}

/// Errors of one pod's sync; they are logged and the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("runtime: {0}")]
    Cri(#[from] tonic::Status),
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("volumes: {0}")]
    Volume(#[from] volumes::VolumeError),
}

pub struct Kubelet {
    pub cfg: Config,
    pub client: kube::Client,
    pub cri: Clients,
    state: Mutex<State>,
}

fn uid_label(labels: &HashMap<String, String>) -> Option<&str> {
    labels.get(labels::POD_UID).map(String::as_str)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Kubelet {
    pub fn new(cfg: Config, client: kube::Client, cri: Clients) -> Arc<Kubelet> {
        Arc::new(Kubelet {
            cfg,
            client,
            cri,
            state: Mutex::new(State::default()),
        })
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// One pass over all pods bound here. `pods` must be the complete set (a synced
    /// reflector): anything in the runtime that belongs to no pod in it is removed.
    pub async fn sync_all(self: &Arc<Self>, pods: Vec<Arc<Pod>>) -> Result<(), SyncError> {
        let mut rt = self.cri.rt.clone();
        let sandboxes = rt
            .list_pod_sandbox(v1::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        let containers = rt
            .list_containers(v1::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers;
        let mut by_uid: HashMap<String, (Vec<v1::PodSandbox>, Vec<v1::Container>)> = HashMap::new();
        for s in sandboxes {
            if let Some(uid) = uid_label(&s.labels) {
                by_uid.entry(uid.to_string()).or_default().0.push(s);
            }
        }
        for c in containers {
            if let Some(uid) = uid_label(&c.labels) {
                by_uid.entry(uid.to_string()).or_default().1.push(c);
            }
        }
        let wanted: HashSet<&str> = pods.iter().map(|p| cri_config::pod_uid(p)).collect();
        let orphans: Vec<_> = by_uid
            .iter()
            .filter(|(uid, _)| !wanted.contains(uid.as_str()))
            .map(|(uid, v)| (uid.clone(), v.clone()))
            .collect();
        for pod in pods {
            let uid = cri_config::pod_uid(&pod).to_string();
            if uid.is_empty() || !self.claim(&uid) {
                continue;
            }
            let found = by_uid.remove(&uid).unwrap_or_default();
            let k = self.clone();
            tokio::spawn(async move {
                let r = if pod.metadata.deletion_timestamp.is_some() {
                    k.terminate(&pod, found).await
                } else {
                    k.sync_pod(&pod, found).await
                };
                if let Err(e) = r {
                    tracing::warn!(
                        namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
                        pod = pod.metadata.name.as_deref().unwrap_or(""),
                        uid = %uid,
                        error = %e,
                        "sync pod"
                    );
                }
                k.release(&uid);
            });
        }
        for (uid, found) in orphans {
            if !self.claim(&uid) {
                continue;
            }
            let k = self.clone();
            tokio::spawn(async move {
                if let Err(e) = k.remove_runtime_objects(&uid, found, None).await {
                    tracing::warn!(uid = %uid, error = %e, "removing leftovers of a pod");
                }
                k.forget(&uid);
                k.release(&uid);
            });
        }
        Ok(())
    }

    fn claim(&self, uid: &str) -> bool {
        self.state.lock().unwrap().busy.insert(uid.to_string())
    }

    fn release(&self, uid: &str) {
        self.state.lock().unwrap().busy.remove(uid);
    }

    fn forget(&self, uid: &str) {
        let mut st = self.state.lock().unwrap();
        st.refreshed.remove(uid);
        st.backoff.forget(uid);
        st.retry.forget(uid);
        st.reported.remove(uid);
        st.waiting.remove(uid);
    }

    fn set_waiting(&self, uid: &str, name: &str, why: Option<(&str, String)>) {
        let mut st = self.state.lock().unwrap();
        let w = st.waiting.entry(uid.to_string()).or_default();
        match why {
            Some((reason, msg)) => {
                w.insert(name.to_string(), (reason.to_string(), msg));
            }
            None => {
                w.remove(name);
            }
        }
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
                .rt
                .clone()
                .container_status(v1::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await;
            match r {
                Ok(r) => {
                    if let Some(s) = r.into_inner().status {
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
        let s = self
            .cri
            .rt
            .clone()
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await?
            .into_inner();
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
        Ok(ip)
    }

    async fn sync_pod(
        &self,
        pod: &Pod,
        (mut sandboxes, containers): (Vec<v1::PodSandbox>, Vec<v1::Container>),
    ) -> Result<(), SyncError> {
        let uid = cri_config::pod_uid(pod).to_string();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let done = matches!(phase, Some("Succeeded" | "Failed"));
        let mut rt = self.cri.rt.clone();
        if done {
            // Finished pods keep their record but give back their network.
            for s in sandboxes
                .iter()
                .filter(|s| s.state == v1::PodSandboxState::SandboxReady as i32)
            {
                rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await?;
            }
            return Ok(());
        }
        let mut obs = Observed {
            sandboxes: sandboxes.clone(),
            containers: self.statuses(&containers).await?,
            ..Default::default()
        };
        let sandbox_id = match obs.ready_sandbox() {
            Some(s) => s.id.clone(),
            None => {
                // First start, or the sandbox died: a new one, and every container anew.
                let attempt = sandboxes
                    .iter()
                    .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
                    .max()
                    .unwrap_or(0);
                for s in &sandboxes {
                    rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
                        pod_sandbox_id: s.id.clone(),
                    })
                    .await?;
                }
                let config = cri_config::sandbox_config(&self.cfg, pod, attempt);
                let t0 = std::time::Instant::now();
                let id = rt
                    .run_pod_sandbox(v1::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                tracing::info!(
                    namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    uid = cri_config::pod_uid(pod),
                    sandbox = %id,
                    attempt,
                    ms = t0.elapsed().as_secs_f64() * 1000.0,
                    "sandbox created"
                );
                sandboxes.push(v1::PodSandbox {
                    id: id.clone(),
                    metadata: config.metadata,
                    state: v1::PodSandboxState::SandboxReady as i32,
                    created_at: now_nanos(),
                    labels: config.labels,
                    ..Default::default()
                });
                obs.sandboxes = sandboxes.clone();
                id
            }
        };
        let ip = self.sandbox_ip(&sandbox_id).await?;
        obs.sandbox_ip = Some(ip.clone());
        let pod_spec = pod.spec.clone().unwrap_or_default();
        let policy = pod_spec.restart_policy.as_deref().unwrap_or("Always");
        let mut changed = false;
        let mut probed = HashMap::new();
        // Init containers first, one at a time, each to success.
        let mut initialized = true;
        for c in pod_spec.init_containers.iter().flatten() {
            let attempts = obs.attempts(&c.name);
            let latest = attempts.first().copied();
            let in_sandbox = latest.is_some_and(|s| {
                containers
                    .iter()
                    .any(|x| x.id == s.id && x.pod_sandbox_id == sandbox_id)
            });
            let state = latest.map(|s| s.state);
            let next = match latest {
                None => Some(0),
                Some(s)
                    if in_sandbox && state == Some(v1::ContainerState::ContainerCreated as i32) =>
                {
                    changed |= self.start(pod, &c.name, &s.id).await?;
                    None
                }
                Some(_)
                    if in_sandbox && state == Some(v1::ContainerState::ContainerRunning as i32) =>
                {
                    None
                }
                Some(s) if in_sandbox && s.exit_code == 0 => continue,
                Some(s) => {
                    if state != Some(v1::ContainerState::ContainerExited as i32) {
                        rt.stop_container(v1::StopContainerRequest {
                            container_id: s.id.clone(),
                            timeout: 0,
                        })
                        .await?;
                    }
                    // A failed init container fails a Never pod; a new sandbox reruns all.
                    if in_sandbox && policy == "Never" {
                        None
                    } else {
                        self.backoff_restart(pod, &uid, &c.name, s)
                    }
                }
            };
            if let Some(attempt) = next {
                changed |= self
                    .run_attempt(pod, c, &attempts, attempt, &sandbox_id, &ip)
                    .await?;
            }
            initialized = false;
            break;
        }
        let app_containers = if initialized {
            pod_spec.containers.as_slice()
        } else {
            &[]
        };
        for c in app_containers {
            let attempts = obs.attempts(&c.name);
            let latest = attempts.first().copied();
            let in_sandbox = latest.is_some_and(|s| {
                containers
                    .iter()
                    .any(|x| x.id == s.id && x.pod_sandbox_id == sandbox_id)
            });
            let next = match latest {
                None => Some(0),
                Some(s) if s.state == v1::ContainerState::ContainerCreated as i32 && in_sandbox => {
                    if self.start(pod, &c.name, &s.id).await? {
                        changed = true;
                    }
                    None
                }
                Some(s) if s.state == v1::ContainerState::ContainerRunning as i32 && in_sandbox => {
                    self.set_waiting(&uid, &c.name, None);
                    if c.startup_probe.is_some()
                        || c.liveness_probe.is_some()
                        || c.readiness_probe.is_some()
                    {
                        let v = self.probe(pod, c, s, &ip).await?;
                        if v.kill.is_some() {
                            changed = true;
                        }
                        probed.insert(c.name.clone(), v);
                    }
                    None
                }
                Some(s) => {
                    let exited = s.state == v1::ContainerState::ContainerExited as i32;
                    let restart = !in_sandbox
                        || match policy {
                            "Never" => false,
                            "OnFailure" => s.exit_code != 0,
                            _ => true,
                        };
                    if !exited && !in_sandbox {
                        // Left over in a dead sandbox and still running: stop it.
                        rt.stop_container(v1::StopContainerRequest {
                            container_id: s.id.clone(),
                            timeout: 0,
                        })
                        .await?;
                    }
                    if restart {
                        self.backoff_restart(pod, &uid, &c.name, s)
                    } else {
                        None
                    }
                }
            };
            if let Some(attempt) = next {
                if self
                    .run_attempt(pod, c, &attempts, attempt, &sandbox_id, &ip)
                    .await?
                {
                    changed = true;
                }
            }
        }
        obs.probed = probed;
        self.refresh_volumes(pod).await;
        if changed {
            obs.containers = self
                .statuses(
                    &rt.list_containers(v1::ListContainersRequest {
                        filter: Some(v1::ContainerFilter {
                            label_selector: HashMap::from([(
                                labels::POD_UID.to_string(),
                                uid.clone(),
                            )]),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner()
                    .containers,
                )
                .await?;
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

    /// An event about one container of the pod (what `kubectl describe pod` lists).
    async fn event(
        &self,
        pod: &Pod,
        container: &str,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let init = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .any(|c| c.name == container);
        let field = if init {
            format!("spec.initContainers{{{container}}}")
        } else {
            format!("spec.containers{{{container}}}")
        };
        tracing::info!(
            namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            uid = cri_config::pod_uid(pod),
            container,
            reason,
            message = %message,
            "{}",
            if warning { "warning" } else { "event" }
        );
        crate::events::record(
            &self.client,
            &self.cfg.node_name,
            pod,
            Some(field),
            warning,
            reason,
            message,
        )
        .await;
    }

    /// A container that cannot start: its waiting reason, and a Failed event when the
    /// reason is new (retries every second must not flood the events).
    async fn fail(&self, pod: &Pod, name: &str, reason: &str, msg: String) {
        let uid = cri_config::pod_uid(pod);
        let known = self
            .state
            .lock()
            .unwrap()
            .waiting
            .get(uid)
            .and_then(|w| w.get(name))
            .is_some_and(|(r, m)| r == reason && *m == msg);
        if !known {
            let (event, text) = match reason {
                "ContainerCreating" => (None, msg.clone()),
                _ => (Some(name), format!("Error: {msg}")),
            };
            let reason = if event.is_some() {
                "Failed"
            } else {
                "FailedMount"
            };
            match event {
                Some(n) => self.event(pod, n, true, reason, text).await,
                // Volumes are the pod's, not a container's.
                None => {
                    crate::events::record(
                        &self.client,
                        &self.cfg.node_name,
                        pod,
                        None,
                        true,
                        reason,
                        text,
                    )
                    .await
                }
            }
        }
        self.set_waiting(uid, name, Some((reason, msg)));
    }

    /// An exited container that may restart: Some(next attempt) once its back-off has
    /// passed; meanwhile it is reported as CrashLoopBackOff.
    fn backoff_restart(
        &self,
        pod: &Pod,
        uid: &str,
        name: &str,
        s: &v1::ContainerStatus,
    ) -> Option<u32> {
        let ran = Duration::from_nanos((s.finished_at - s.started_at).max(0) as u64);
        let since = Duration::from_nanos((now_nanos() - s.finished_at).max(0) as u64);
        let v = self.state.lock().unwrap().backoff.check(
            (uid.to_string(), name.to_string()),
            ran,
            since,
        );
        match v {
            Verdict::RestartNow => Some(attempt_of(s) + 1),
            Verdict::Wait(d) => {
                self.set_waiting(
                    uid,
                    name,
                    Some((
                        "CrashLoopBackOff",
                        format!(
                            "back-off {}s restarting failed container={name} pod={}",
                            (d + since).as_secs(),
                            pod.metadata.name.as_deref().unwrap_or("")
                        ),
                    )),
                );
                None
            }
        }
    }

    /// Start run `attempt` of a container; older dead runs go, the last one stays for
    /// lastState.
    async fn run_attempt(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        attempts: &[&v1::ContainerStatus],
        attempt: u32,
        sandbox_id: &str,
        ip: &str,
    ) -> Result<bool, SyncError> {
        for old in attempts.iter().skip(1) {
            let _ = self
                .cri
                .rt
                .clone()
                .remove_container(v1::RemoveContainerRequest {
                    container_id: old.id.clone(),
                })
                .await;
            let mut st = self.state.lock().unwrap();
            st.statuses.remove(&old.id);
            st.probes.remove(&old.id);
        }
        self.create_and_start(pod, c, attempt, sandbox_id, ip).await
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

    /// Run a running container's due probes; a failed startup or liveness probe stops
    /// it (the restart then follows restartPolicy and back-off).
    async fn probe(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        s: &v1::ContainerStatus,
        ip: &str,
    ) -> Result<probes::Verdict, SyncError> {
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
            rt: self.cri.rt.clone(),
            id: s.id.clone(),
        };
        let v = run.check(c, started, ip, &exec).await;
        self.state.lock().unwrap().probes.insert(s.id.clone(), run);
        if let Some((kind, why)) = &v.kill {
            let field = Some(format!("spec.containers{{{}}}", c.name));
            let node = &self.cfg.node_name;
            crate::events::record(
                &self.client,
                node,
                pod,
                field.clone(),
                true,
                "Unhealthy",
                format!("{} probe failed: {why}", kind.name()),
            )
            .await;
            crate::events::record(
                &self.client,
                node,
                pod,
                field,
                false,
                "Killing",
                format!(
                    "Container {} failed {} probe, will be restarted",
                    c.name,
                    kind.name().to_lowercase()
                ),
            )
            .await;
            let grace = kind
                .of(c)
                .and_then(|p| p.termination_grace_period_seconds)
                .unwrap_or_else(|| cri_config::grace_seconds(pod));
            self.cri
                .rt
                .clone()
                .stop_container(v1::StopContainerRequest {
                    container_id: s.id.clone(),
                    timeout: grace,
                })
                .await?;
            self.state.lock().unwrap().probes.remove(&s.id);
        }
        Ok(v)
    }

    /// Start a created container; false (and a waiting reason) if the runtime refused.
    async fn start(&self, pod: &Pod, name: &str, id: &str) -> Result<bool, SyncError> {
        let uid = cri_config::pod_uid(pod);
        let r = self
            .cri
            .rt
            .clone()
            .start_container(v1::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await;
        match r {
            Ok(_) => {
                self.set_waiting(uid, name, None);
                self.event(
                    pod,
                    name,
                    false,
                    "Started",
                    format!("Started container {name}"),
                )
                .await;
                Ok(true)
            }
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.into()),
            Err(e) => {
                self.fail(pod, name, "RunContainerError", e.message().to_string())
                    .await;
                Ok(true)
            }
        }
    }

    async fn create_and_start(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        attempt: u32,
        sandbox_id: &str,
        ip: &str,
    ) -> Result<bool, SyncError> {
        if let Err((reason, msg)) = self.ensure_image(pod, c).await? {
            self.fail(pod, &c.name, reason, msg).await;
            return Ok(false);
        }
        let sources = sources::fetch(&self.client, pod).await?;
        let vols = match volumes::prepare(&self.cfg.root_dir, pod, &sources) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("MountVolume.SetUp failed: {e}");
                self.fail(pod, &c.name, "ContainerCreating", msg).await;
                return Ok(false);
            }
        };
        let inputs = cri_config::Inputs {
            restart_count: attempt,
            pod_ip: ip,
            sources: &sources,
            volumes: &vols,
        };
        let config = match cri_config::container_config(&self.cfg, pod, c, &inputs) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.fail(pod, &c.name, "CreateContainerConfigError", e.to_string())
                    .await;
                return Ok(false);
            }
        };
        // A create that failed waits before the next try (the reason stays).
        let key = (
            cri_config::pod_uid(pod).to_string(),
            format!("create:{}", c.name),
        );
        let now = std::time::Instant::now();
        if self.state.lock().unwrap().retry.check(&key, now).is_err() {
            return Ok(false);
        }
        let r = self
            .cri
            .rt
            .clone()
            .create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(cri_config::sandbox_config(&self.cfg, pod, 0)),
            })
            .await;
        match r {
            Ok(r) => {
                self.state.lock().unwrap().retry.succeeded(&key);
                let name = &c.name;
                self.event(
                    pod,
                    name,
                    false,
                    "Created",
                    format!("Created container {name}"),
                )
                .await;
                self.start(pod, name, &r.into_inner().container_id).await
            }
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.into()),
            Err(e) => {
                self.state
                    .lock()
                    .unwrap()
                    .retry
                    .failed(key, std::time::Instant::now());
                self.fail(
                    pod,
                    &c.name,
                    "CreateContainerError",
                    e.message().to_string(),
                )
                .await;
                Ok(false)
            }
        }
    }

    /// Pull per imagePullPolicy. The inner error is a waiting reason and message.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
    ) -> Result<Result<(), (&'static str, String)>, SyncError> {
        let image = c.image.clone().unwrap_or_default();
        let spec = v1::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let mut img = self.cri.img.clone();
        let present = img
            .image_status(v1::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image.rsplit('/').next().is_some_and(|l| l.contains(':'));
            if !tagged || image.ends_with(":latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        match policy.as_str() {
            "Never" if !present => {
                return Ok(Err((
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                )))
            }
            "Never" | "IfNotPresent" if present => {
                let msg = format!("Container image \"{image}\" already present on machine");
                self.event(pod, &c.name, false, "Pulled", msg).await;
                return Ok(Ok(()));
            }
            _ => {}
        }
        // After a failed pull the next waits (10 s doubling to 5 min), as the kubelet's
        // image back-off: ImagePullBackOff meanwhile, announced once per wait.
        let key = (
            cri_config::pod_uid(pod).to_string(),
            format!("pull:{}", c.name),
        );
        let waiting = self
            .state
            .lock()
            .unwrap()
            .retry
            .check(&key, std::time::Instant::now());
        if let Err((_, first)) = waiting {
            let msg = format!("Back-off pulling image \"{image}\"");
            if first {
                self.event(pod, &c.name, false, "BackOff", msg.clone())
                    .await;
            }
            return Ok(Err(("ImagePullBackOff", msg)));
        }
        self.event(
            pod,
            &c.name,
            false,
            "Pulling",
            format!("Pulling image \"{image}\""),
        )
        .await;
        let t0 = std::time::Instant::now();
        let r = img
            .pull_image(v1::PullImageRequest {
                image: Some(spec),
                auth: None,
                sandbox_config: None,
            })
            .await;
        match r {
            Ok(_) => {
                self.state.lock().unwrap().retry.succeeded(&key);
                let msg = format!(
                    "Successfully pulled image \"{image}\" in {:?}",
                    t0.elapsed()
                );
                self.event(pod, &c.name, false, "Pulled", msg).await;
                Ok(Ok(()))
            }
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.into()),
            Err(e) => {
                self.state
                    .lock()
                    .unwrap()
                    .retry
                    .failed(key, std::time::Instant::now());
                Ok(Err((
                    "ErrImagePull",
                    format!("pull {image}: {}", e.message()),
                )))
            }
        }
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
        self.state.lock().unwrap().reported.insert(uid, status);
        Ok(())
    }

    /// Stop every container (SIGTERM, SIGKILL after `grace`), then remove the sandboxes.
    async fn remove_runtime_objects(
        &self,
        uid: &str,
        (sandboxes, containers): (Vec<v1::PodSandbox>, Vec<v1::Container>),
        grace: Option<i64>,
    ) -> Result<(), SyncError> {
        let stops = containers
            .iter()
            .filter(|c| c.state == v1::ContainerState::ContainerRunning as i32)
            .map(|c| {
                let timeout = grace.unwrap_or_else(|| {
                    c.annotations
                        .get(labels::GRACE_PERIOD)
                        .and_then(|g| g.parse().ok())
                        .unwrap_or(30)
                });
                let mut rt = self.cri.rt.clone();
                let id = c.id.clone();
                async move {
                    rt.stop_container(v1::StopContainerRequest {
                        container_id: id,
                        timeout,
                    })
                    .await
                }
            });
        for r in futures_util::future::join_all(stops).await {
            match r {
                Err(e) if e.code() != tonic::Code::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let mut rt = self.cri.rt.clone();
        for s in &sandboxes {
            rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await?;
            self.state.lock().unwrap().ips.remove(&s.id);
        }
        {
            let mut st = self.state.lock().unwrap();
            for c in &containers {
                st.statuses.remove(&c.id);
                st.probes.remove(&c.id);
            }
        }
        volumes::cleanup(&self.cfg.root_dir, uid)?;
        Ok(())
    }

    /// The kubelet's half of graceful deletion: stop within the grace period, then delete
    /// the object for good (grace 0, only this incarnation of the pod).
    async fn terminate(
        &self,
        pod: &Pod,
        found: (Vec<v1::PodSandbox>, Vec<v1::Container>),
    ) -> Result<(), SyncError> {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| cri_config::grace_seconds(pod));
        let uid = cri_config::pod_uid(pod).to_string();
        self.remove_runtime_objects(&uid, found, Some(grace))
            .await?;
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(pod)
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.forget(&uid);
        Ok(())
    }
}
