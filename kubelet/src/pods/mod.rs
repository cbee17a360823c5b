//! Pods: the sync loop that makes the runtime match the pods bound to this node.
//!
//! Each pass lists the runtime's sandboxes and containers (as the kubelet's PLEG relists)
//! and, for every pod, observes what the runtime holds ([`sync`]), asks the pure planner
//! what to do ([`plan`]: a sandbox, each container in order, a restart per
//! restartPolicy once its back-off allows, a kill for a failed probe), carries the steps
//! out and posts the status. A pod marked for deletion is stopped within its grace
//! period and then removed from the API (the graceful-deletion handshake,
//! [`teardown`]); sandboxes whose pod is gone are removed. One task per pod, so a slow
//! pull or stop holds up only its own pod.

mod containers;
pub mod cri_config;
pub mod dns;
mod notes;
pub mod plan;
pub mod probes;
pub mod sources;
pub mod status;
mod sync;
mod teardown;
#[cfg(test)]
mod tests;
pub mod volumes;

use crate::backoff::{Backoff, Retry};
use crate::cri::Cri;
use crate::labels;
use crate::Config;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::Api;
use skiff_cri::v1;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// What the kubelet remembers between passes (all of it can be rebuilt: a restarted
/// kubelet starts with none).
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
    /// uid → when this kubelet first saw the pod (the trace's "kubelet" step).
    seen: HashMap<String, SystemTime>,
    /// Pods whose first Ready has been announced.
    ready_noted: HashSet<String>,
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

/// The runtime and the pods found in it for one pod uid.
type Found = (Vec<v1::PodSandbox>, Vec<v1::Container>);

/// The pod half of the kubelet, over any [`Cri`] (the runtime's socket in the daemon).
pub struct Kubelet<R: Cri> {
    pub cfg: Config,
    pub client: kube::Client,
    pub cri: R,
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

impl<R: Cri> Kubelet<R> {
    pub fn new(cfg: Config, client: kube::Client, cri: R) -> Arc<Kubelet<R>> {
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
        let sandboxes = self
            .cri
            .list_pod_sandbox(v1::ListPodSandboxRequest::default())
            .await?
            .items;
        let containers = self
            .cri
            .list_containers(v1::ListContainersRequest::default())
            .await?
            .containers;
        let mut by_uid: HashMap<String, Found> = HashMap::new();
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
        let now = SystemTime::now();
        for pod in pods {
            let uid = cri_config::pod_uid(&pod).to_string();
            self.state
                .lock()
                .unwrap()
                .seen
                .entry(uid.clone())
                .or_insert(now);
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
        st.seen.remove(uid);
        st.ready_noted.remove(uid);
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
}
