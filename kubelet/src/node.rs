//! The Node object: registration at start, then status (capacity, conditions, addresses,
//! versions) posted when it changes or every status period.

use crate::Config;
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;

/// What this kubelet reports as its own version.
pub const KUBELET_VERSION: &str = "v1.32.0-skiff";

/// Facts about the machine read once at start.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub memory_ki: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub runtime_version: String,
}

impl Machine {
    pub fn read(runtime_version: String) -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let memory_ki = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_ki,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            runtime_version,
        }
    }
}

/// Go's name for the architecture, as Kubernetes reports it.
fn arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        a => a.into(),
    }
}

fn labels(cfg: &Config) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch()),
    ]);
    l.extend(cfg.node_labels.iter().cloned());
    l
}

/// The status the kubelet reports; `not_ready` says why the node is not Ready (the
/// runtime down, or its network not ready).
pub fn status(cfg: &Config, m: &Machine, not_ready: Option<&str>, port: i32) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(m.cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{}Ki", m.memory_ki))),
        ("pods".to_string(), Quantity(cfg.max_pods.to_string())),
    ]);
    let now = Time(Timestamp::now());
    let cond = |type_: &str, ok: bool, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            match not_ready {
                None => cond(
                    "Ready",
                    true,
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
                Some(why) => cond("Ready", false, "KubeletNotReady", why),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint { port }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: m.runtime_version.clone(),
            kernel_version: m.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: m.os_image.clone(),
            system_uuid: m.machine_id.clone(),
        }),
        ..Default::default()
    }
}

/// Create the Node, or take over an existing one of that name (a restarted kubelet),
/// then post its status. Returns the Node's uid (the Lease's owner).
/// Create (or take over) the Node and post its status; `not_ready` is what the runtime
/// says now (a node whose pod network waits for its podCIDR registers NotReady).
pub async fn register(
    api: &Api<Node>,
    cfg: &Config,
    m: &Machine,
    port: i32,
    not_ready: Option<&str>,
) -> Result<String, kube::Error> {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels(cfg)),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": labels(cfg)}});
            api.patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        Err(e) => return Err(e),
    }
    let n = post_status(api, cfg, m, not_ready, port).await?;
    Ok(n.metadata.uid.unwrap_or_default())
}

/// The Node's Ready condition as the API server has it.
pub fn api_ready(n: &Node) -> Option<bool> {
    let conds = n.status.as_ref()?.conditions.as_ref()?;
    Some(
        conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
    )
}

/// Why the runtime makes the node not Ready, from its CRI Status (as the kubelet words
/// it), or None when it and its network are ready.
pub fn runtime_not_ready(
    status: Result<skiff_cri::v1::StatusResponse, tonic::Status>,
) -> Option<String> {
    let st = match status {
        Ok(s) => s,
        Err(e) => return Some(format!("container runtime is down: {}", e.message())),
    };
    let conds = st.status.map(|s| s.conditions).unwrap_or_default();
    for (kind, what) in [
        ("RuntimeReady", "container runtime"),
        ("NetworkReady", "container runtime network"),
    ] {
        if let Some(c) = conds.iter().find(|c| c.r#type == kind && !c.status) {
            return Some(format!(
                "{what} not ready: {kind}=false reason:{} message:{}",
                c.reason, c.message
            ));
        }
    }
    None
}

/// Keep each condition's lastTransitionTime from `old` while its status is the same:
/// the time says when it last changed, not when it was last posted (as the kubelet's
/// setters do).
pub fn keep_transitions(new: &mut NodeStatus, old: Option<&NodeStatus>) {
    let Some(old) = old.and_then(|o| o.conditions.as_ref()) else {
        return;
    };
    for c in new.conditions.iter_mut().flatten() {
        if let Some(prev) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            if prev.last_transition_time.is_some() {
                c.last_transition_time = prev.last_transition_time.clone();
            }
        }
    }
}

pub async fn post_status(
    api: &Api<Node>,
    cfg: &Config,
    m: &Machine,
    not_ready: Option<&str>,
    port: i32,
) -> Result<Node, kube::Error> {
    let mut st = status(cfg, m, not_ready, port);
    // What the API has now; without it (unreadable) every condition starts now.
    let current = api.get_status(&cfg.node_name).await.ok();
    keep_transitions(&mut st, current.as_ref().and_then(|n| n.status.as_ref()));
    let patch = serde_json::json!({ "status": st });
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: &str, at: &str) -> NodeCondition {
        NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            last_transition_time: Some(Time(at.parse().unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_does() {
        let old = NodeStatus {
            conditions: Some(vec![cond("True", "2026-01-01T00:00:00Z")]),
            ..Default::default()
        };
        let mut same = NodeStatus {
            conditions: Some(vec![cond("True", "2026-06-01T00:00:00Z")]),
            ..Default::default()
        };
        keep_transitions(&mut same, Some(&old));
        assert_eq!(
            same.conditions.unwrap()[0].last_transition_time,
            Some(Time("2026-01-01T00:00:00Z".parse().unwrap()))
        );
        let mut changed = NodeStatus {
            conditions: Some(vec![cond("False", "2026-06-01T00:00:00Z")]),
            ..Default::default()
        };
        keep_transitions(&mut changed, Some(&old));
        assert_eq!(
            changed.conditions.unwrap()[0].last_transition_time,
            Some(Time("2026-06-01T00:00:00Z".parse().unwrap()))
        );
    }

    #[test]
    fn runtime_readiness_as_the_kubelet_words_it() {
        use skiff_cri::v1;
        let status = |net: bool| {
            Ok(v1::StatusResponse {
                status: Some(v1::RuntimeStatus {
                    conditions: vec![
                        v1::RuntimeCondition {
                            r#type: "RuntimeReady".into(),
                            status: true,
                            ..Default::default()
                        },
                        v1::RuntimeCondition {
                            r#type: "NetworkReady".into(),
                            status: net,
                            reason: "NetworkPluginNotReady".into(),
                            message: "no CIDR".into(),
                        },
                    ],
                }),
                ..Default::default()
            })
        };
        assert_eq!(runtime_not_ready(status(true)), None);
        assert_eq!(
            runtime_not_ready(status(false)).as_deref(),
            Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no CIDR")
        );
        let down = runtime_not_ready(Err(tonic::Status::unavailable("connection refused")));
        assert_eq!(
            down.as_deref(),
            Some("container runtime is down: connection refused")
        );
    }
}
