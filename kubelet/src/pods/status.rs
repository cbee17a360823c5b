//! A pod's status as the API shows it, computed from what the runtime reports: phase,
//! conditions, IPs and one ContainerStatus per container.

use super::Observed;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use skiff_cri::v1;

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(nanos as i128).ok())
        .flatten()
        .map(Time)
}

/// The API's view of one CRI container status.
fn state(s: &v1::ContainerStatus) -> ContainerState {
    match v1::ContainerState::try_from(s.state) {
        Ok(v1::ContainerState::ContainerRunning) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(s.started_at),
            }),
            ..Default::default()
        },
        Ok(v1::ContainerState::ContainerExited) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: s.exit_code,
                reason: Some(if !s.reason.is_empty() {
                    s.reason.clone()
                } else if s.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                }),
                message: (!s.message.is_empty()).then(|| s.message.clone()),
                started_at: time(s.started_at),
                finished_at: time(s.finished_at),
                container_id: Some(format!("skiff://{}", s.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => waiting("ContainerCreating", ""),
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: (!message.is_empty()).then(|| message.into()),
        }),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, old: Option<&PodStatus>, reason: Option<&str>) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time changes only when the status does.
    let since = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: Some(since),
        reason: reason.filter(|_| !ok).map(String::from),
        ..Default::default()
    }
}

/// One container's status from its runs; `idle` is the waiting reason when it has none.
fn container_status(c: &Container, obs: &Observed, idle: &str) -> ContainerStatus {
    let attempts = obs.attempts(&c.name);
    let latest = attempts.first();
    let restart_count = latest.map_or(0, |s| s.metadata.as_ref().map_or(0, |m| m.attempt));
    let mut st = match latest {
        Some(s) => state(s),
        None => waiting(idle, ""),
    };
    // A reason the sync loop gave (back-off, pull error, bad config) wins over "exited".
    if let Some((reason, msg)) = obs.waiting.get(&c.name) {
        if st.running.is_none() {
            st = waiting(reason, msg);
        }
    }
    let last_state = attempts
        .get(1)
        .copied()
        .map(state)
        .filter(|s| s.terminated.is_some());
    let last_state = match (&st.waiting, latest) {
        // Waiting to restart: what it last did is the dead attempt.
        (Some(_), Some(s)) if s.state == v1::ContainerState::ContainerExited as i32 => {
            Some(state(s))
        }
        _ => last_state,
    };
    let probed = obs.probed.get(&c.name);
    ContainerStatus {
        name: c.name.clone(),
        // The runtime's name for the image it runs (`docker.io/library/nginx:latest` for
        // `nginx`), as the kubelet reports it; the spec's until a run exists.
        image: latest
            .and_then(|s| s.image.as_ref())
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .or_else(|| c.image.clone())
            .unwrap_or_default(),
        image_id: latest.map_or(String::new(), |s| s.image_ref.clone()),
        container_id: latest.map(|s| format!("skiff://{}", s.id)),
        // A container with a readiness (or startup) probe is not ready (started) until
        // the probe says so: a run no probe has looked at yet is neither.
        ready: st.running.is_some()
            && probed.map_or(
                c.readiness_probe.is_none() && c.startup_probe.is_none(),
                |v| v.ready,
            ),
        started: Some(
            st.running.is_some() && probed.map_or(c.startup_probe.is_none(), |v| v.started),
        ),
        restart_count: restart_count as i32,
        state: Some(st),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

fn exit_code(s: &ContainerStatus) -> Option<i32> {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// Kubernetes' QoS class: Guaranteed when every container limits CPU and memory with
/// requests equal to limits, BestEffort when none asks for anything, else Burstable.
pub fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let (req, lim) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
        for res in ["cpu", "memory"] {
            let l = lim.get(res);
            // An unset request defaults to the limit.
            let q = req.get(res).or(l);
            any |= q.is_some() || l.is_some();
            let parse = |v: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
                         scale| {
                v.and_then(|q| skiff_apimachinery::quantity::parse_quantity(&q.0, scale))
            };
            let scale = if res == "cpu" { 1000 } else { 1 };
            if l.is_none() || parse(q, scale) != parse(l, scale) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub fn compute(pod: &Pod, obs: &Observed, host_ip: &str) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.as_ref();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    // Init containers run one after another, each to success, before the others start.
    let mut inits: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, obs, "PodInitializing"))
        .collect();
    for s in &mut inits {
        s.ready = exit_code(s) == Some(0);
    }
    let initialized = inits.iter().all(|s| exit_code(s) == Some(0));
    let init_failed =
        policy == "Never" && inits.iter().any(|s| exit_code(s).is_some_and(|c| c != 0));
    let idle = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, obs, idle))
        .collect();
    let (mut running, mut stopped, mut succeeded, mut waiting_n) = (0, 0, 0, 0);
    for s in &statuses {
        let st = s.state.clone().unwrap_or_default();
        let had_run = s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some());
        // Kubernetes' getPhase counts: a container waiting to restart has stopped.
        match (&st.running, &st.terminated) {
            (Some(_), _) => running += 1,
            (_, Some(t)) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            _ if had_run => stopped += 1,
            _ => waiting_n += 1,
        }
    }
    let n = spec.containers.len();
    let phase = if init_failed {
        "Failed"
    } else if !initialized || n == 0 || waiting_n > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if policy == "Always" {
        // All stopped, and they will restart.
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if policy == "Never" {
        "Failed"
    } else {
        "Running"
    };
    let all_ready = n > 0 && statuses.iter().all(|s| s.ready);
    let not_ready = (!all_ready).then_some("ContainersNotReady");
    let conditions = vec![
        condition("PodReadyToStartContainers", obs.sandbox_ready(), old, None),
        condition(
            "Initialized",
            initialized,
            old,
            Some("ContainersNotInitialized"),
        ),
        condition("Ready", all_ready, old, not_ready),
        condition("ContainersReady", all_ready, old, not_ready),
        condition("PodScheduled", true, old, None),
    ];
    // A host-network pod has the node's address.
    let pod_ip = if spec.host_network == Some(true) {
        Some(host_ip.to_string())
    } else {
        obs.pod_ip()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.into()),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: old
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(Time(Timestamp::now()))),
        container_statuses: Some(statuses),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        qos_class: Some(qos_class(&spec).into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(containers: serde_json::Value) -> k8s_openapi::api::core::v1::PodSpec {
        serde_json::from_value(serde_json::json!({ "containers": containers })).unwrap()
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&spec(serde_json::json!([{"name": "a"}]))),
            "BestEffort"
        );
        let g = serde_json::json!([{"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                                   {"name": "b", "resources": {"limits": {"cpu": "0.5", "memory": "64Mi"}, "requests": {"cpu": "500m", "memory": "64Mi"}}}]);
        assert_eq!(qos_class(&spec(g)), "Guaranteed");
        let b = serde_json::json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]);
        assert_eq!(qos_class(&spec(b)), "Burstable");
        let b2 = serde_json::json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]);
        assert_eq!(qos_class(&spec(b2)), "Burstable");
    }
}
