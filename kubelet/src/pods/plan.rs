//! The kubelet's decision for one pod, as Kubernetes' `computePodActions`: from the pod,
//! what the runtime holds for it, what its probes say and the crash back-off, the steps
//! that bring the runtime one stretch closer to the spec. Pure (the clock comes in as
//! `now`), so every case is a table row; [`super::Kubelet`] carries the steps out.
//!
//! Init and app containers go through the same step ([`next_step`]); they differ only in
//! order (init containers one at a time, each to success) and in when an exited one
//! restarts.

use super::cri_config;
use super::probes::Kind;
use super::{attempt_of, Observed};
use crate::backoff::{Backoff, Verdict};
use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_cri::v1;
use std::time::Duration;

/// One step for the executor, in plan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop a sandbox that is no longer the pod's (its containers stop with it).
    StopSandbox { id: String },
    /// Run a new sandbox; the container steps after it use it.
    CreateSandbox { attempt: u32 },
    /// Stop a running container.
    StopContainer {
        id: String,
        name: String,
        grace: i64,
        why: StopReason,
    },
    /// Remove an older dead run (the latest dead one stays: it is lastState).
    RemoveContainer { id: String },
    /// Start a container that was created but not started.
    StartContainer { id: String, name: String },
    /// Pull the image if needed, then create and start run `attempt` of a container.
    /// `restart` is how long the previous run ran, when this restarts one (the
    /// back-off counts it).
    CreateContainer {
        name: String,
        init: bool,
        attempt: u32,
        restart: Option<Duration>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A startup or liveness probe failed.
    Probe(Kind, String),
    /// Still running in a sandbox that is no longer the pod's.
    Orphaned,
}

/// What to do for one pod.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Container name → why it is not running (None: it runs, clear the reason).
    pub waiting: Vec<(String, Option<(String, String)>)>,
}

/// What the planner reads.
pub struct Input<'a> {
    pub pod: &'a Pod,
    /// The runtime's containers of the pod (which sandbox each belongs to).
    pub containers: &'a [v1::Container],
    /// Sandboxes, full container statuses and the probes' verdicts.
    pub observed: &'a Observed,
    pub backoff: &'a Backoff,
    /// Now, in nanoseconds since the epoch (the CRI's clock).
    pub now: i64,
}

/// A pod whose phase is final: it keeps its record, nothing restarts.
pub fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn is(s: &v1::ContainerStatus, state: v1::ContainerState) -> bool {
    s.state == state as i32
}

pub fn compute(i: &Input) -> Plan {
    let mut plan = Plan::default();
    let obs = i.observed;
    if finished(i.pod) {
        // Finished pods give back their network.
        for s in &obs.sandboxes {
            if s.state == v1::PodSandboxState::SandboxReady as i32 {
                plan.actions.push(Action::StopSandbox { id: s.id.clone() });
            }
        }
        return plan;
    }
    let policy = restart_policy(i.pod);
    let sandbox = match obs.ready_sandbox() {
        Some(s) => Some(s.id.as_str()),
        None => {
            // First start, or the sandbox died: a new one, and every container anew.
            let attempt = obs
                .sandboxes
                .iter()
                .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
                .max()
                .unwrap_or(0);
            for s in &obs.sandboxes {
                plan.actions.push(Action::StopSandbox { id: s.id.clone() });
            }
            // A Never pod whose containers ran does not come back in a new sandbox.
            if policy == "Never" && attempt != 0 && !obs.containers.is_empty() {
                return plan;
            }
            plan.actions.push(Action::CreateSandbox { attempt });
            None
        }
    };
    let spec = i.pod.spec.as_ref();
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    for c in inits {
        match next_step(i, &mut plan, c, true, sandbox) {
            Step::Done => continue,
            Step::Busy => return plan,
        }
    }
    for c in spec.map_or(&[][..], |s| s.containers.as_slice()) {
        next_step(i, &mut plan, c, false, sandbox);
    }
    plan
}

/// Whether an init container let the next one go.
enum Step {
    Done,
    Busy,
}

/// The next step for one container; `sandbox` is the pod's ready sandbox, None when a
/// new one is being made.
fn next_step(i: &Input, plan: &mut Plan, c: &Container, init: bool, sandbox: Option<&str>) -> Step {
    let attempts = i.observed.attempts(&c.name);
    let Some(s) = attempts.first().copied() else {
        create(plan, c, init, &attempts, 0, None);
        return Step::Busy;
    };
    let current = sandbox.is_some_and(|sb| {
        i.containers
            .iter()
            .any(|x| x.id == s.id && x.pod_sandbox_id == sb)
    });
    let exited = is(s, v1::ContainerState::ContainerExited);
    if current && is(s, v1::ContainerState::ContainerCreated) {
        plan.actions.push(Action::StartContainer {
            id: s.id.clone(),
            name: c.name.clone(),
        });
        return Step::Busy;
    }
    if current && is(s, v1::ContainerState::ContainerRunning) {
        if !init {
            plan.waiting.push((c.name.clone(), None));
        }
        let kill = i.observed.probed.get(&c.name).and_then(|v| v.kill.clone());
        if let Some((kind, why)) = kill {
            let grace = kind
                .of(c)
                .and_then(|p| p.termination_grace_period_seconds)
                .unwrap_or_else(|| cri_config::grace_seconds(i.pod));
            plan.actions.push(Action::StopContainer {
                id: s.id.clone(),
                name: c.name.clone(),
                grace,
                why: StopReason::Probe(kind, why),
            });
        }
        return Step::Busy;
    }
    if current && exited && s.exit_code == 0 && init {
        return Step::Done;
    }
    if !exited && !current {
        plan.actions.push(Action::StopContainer {
            id: s.id.clone(),
            name: c.name.clone(),
            grace: 0,
            why: StopReason::Orphaned,
        });
    }
    // In a new sandbox everything runs again; in the same one, restartPolicy says.
    // A failed init container fails a Never pod.
    let restart = !current
        || match restart_policy(i.pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        };
    if restart {
        backoff_restart(i, plan, c, init, &attempts, s);
    }
    if init {
        Step::Busy
    } else {
        Step::Done
    }
}

/// Restart an exited container once its back-off has passed; meanwhile it waits in
/// CrashLoopBackOff.
fn backoff_restart(
    i: &Input,
    plan: &mut Plan,
    c: &Container,
    init: bool,
    attempts: &[&v1::ContainerStatus],
    s: &v1::ContainerStatus,
) {
    let nanos = |n: i64| Duration::from_nanos(n.max(0) as u64);
    let ran = nanos(s.finished_at - s.started_at);
    let since = nanos(i.now - s.finished_at);
    let key = (cri_config::pod_uid(i.pod).to_string(), c.name.clone());
    match i.backoff.verdict(&key, ran, since) {
        Verdict::RestartNow => create(plan, c, init, attempts, attempt_of(s) + 1, Some(ran)),
        Verdict::Wait(d) => {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                (d + since).as_secs(),
                c.name,
                i.pod.metadata.name.as_deref().unwrap_or("")
            );
            plan.waiting
                .push((c.name.clone(), Some(("CrashLoopBackOff".into(), message))));
        }
    }
}

/// Run `attempt` of a container; older dead runs go, the latest stays for lastState.
fn create(
    plan: &mut Plan,
    c: &Container,
    init: bool,
    attempts: &[&v1::ContainerStatus],
    attempt: u32,
    restart: Option<Duration>,
) {
    for old in attempts.iter().skip(1) {
        plan.actions
            .push(Action::RemoveContainer { id: old.id.clone() });
    }
    plan.actions.push(Action::CreateContainer {
        name: c.name.clone(),
        init,
        attempt,
        restart,
    });
}

#[cfg(test)]
mod tests;
