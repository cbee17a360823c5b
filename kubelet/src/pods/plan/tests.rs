//! The planner, one table row per situation: the pod, what the runtime holds, the
//! back-off and probe state, and the steps Kubernetes' kubelet would take.

use super::*;
use crate::pods::probes::Verdict as Probed;
use serde_json::json;

const NOW: i64 = 1_000_000 * SEC;
const SEC: i64 = 1_000_000_000;

fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Pod {
    let c = |n: &&str| json!({"name": n, "image": "busybox:1"});
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {
            "restartPolicy": policy,
            "initContainers": inits.iter().map(c).collect::<Vec<_>>(),
            "containers": apps.iter().map(c).collect::<Vec<_>>(),
        }
    }))
    .unwrap()
}

/// The runtime's view of one pod, built row by row.
#[derive(Default)]
struct World {
    obs: Observed,
    list: Vec<v1::Container>,
    backoff: Backoff,
}

#[derive(Clone, Copy)]
enum St {
    Created,
    Running,
    /// Exit code, seconds since it exited (it ran 5 s).
    Exited(i32, i64),
}

impl World {
    fn sandbox(mut self, id: &str, attempt: u32, ready: bool) -> Self {
        self.obs.sandboxes.push(v1::PodSandbox {
            id: id.into(),
            metadata: Some(v1::PodSandboxMetadata {
                attempt,
                ..Default::default()
            }),
            state: if ready {
                v1::PodSandboxState::SandboxReady
            } else {
                v1::PodSandboxState::SandboxNotready
            } as i32,
            created_at: attempt as i64,
            ..Default::default()
        });
        self
    }

    /// Run `attempt` of container `name` in sandbox `sb`, with id `name-attempt`.
    fn run(mut self, name: &str, attempt: u32, sb: &str, st: St) -> Self {
        let id = format!("{name}-{attempt}");
        let (state, exit_code, finished_at) = match st {
            St::Created => (v1::ContainerState::ContainerCreated, 0, 0),
            St::Running => (v1::ContainerState::ContainerRunning, 0, 0),
            St::Exited(code, ago) => (v1::ContainerState::ContainerExited, code, NOW - ago * SEC),
        };
        let started_at = if finished_at > 0 {
            finished_at - 5 * SEC
        } else {
            NOW - 60 * SEC
        };
        self.obs.containers.push(v1::ContainerStatus {
            id: id.clone(),
            metadata: Some(v1::ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            state: state as i32,
            created_at: started_at - SEC,
            started_at,
            finished_at,
            exit_code,
            ..Default::default()
        });
        self.list.push(v1::Container {
            id,
            pod_sandbox_id: sb.into(),
            state: state as i32,
            ..Default::default()
        });
        self
    }

    /// The crash back-off has counted `n` restarts of `name` already.
    fn restarted(mut self, name: &str, n: usize) -> Self {
        for _ in 0..n {
            self.backoff
                .restarted(("u1".into(), name.into()), Duration::from_secs(5));
        }
        self
    }

    fn probe_kill(mut self, name: &str, kind: Kind) -> Self {
        self.obs.probed.insert(
            name.into(),
            Probed {
                started: true,
                ready: false,
                kill: Some((kind, "HTTP probe failed with statuscode: 500".into())),
            },
        );
        self
    }

    fn plan(&self, pod: &Pod) -> Plan {
        compute(&Input {
            pod,
            containers: &self.list,
            observed: &self.obs,
            backoff: &self.backoff,
            now: NOW,
        })
    }
}

fn create(name: &str, init: bool, attempt: u32, restart: bool) -> Action {
    Action::CreateContainer {
        name: name.into(),
        init,
        attempt,
        restart: restart.then(|| Duration::from_secs(5)),
    }
}

fn stop_sandbox(id: &str) -> Action {
    Action::StopSandbox { id: id.into() }
}

fn actions(w: &World, pod: &Pod) -> Vec<Action> {
    w.plan(pod).actions
}

#[test]
fn a_new_pod_gets_a_sandbox_and_its_first_init_container_only() {
    let p = pod("Always", &["i1", "i2"], &["a", "b"]);
    assert_eq!(
        actions(&World::default(), &p),
        [
            Action::CreateSandbox { attempt: 0 },
            create("i1", true, 0, false)
        ]
    );
    // Without init containers, every app container at once.
    let p = pod("Always", &[], &["a", "b"]);
    assert_eq!(
        actions(&World::default(), &p),
        [
            Action::CreateSandbox { attempt: 0 },
            create("a", false, 0, false),
            create("b", false, 0, false)
        ]
    );
}

#[test]
fn init_containers_run_one_at_a_time_each_to_success() {
    let p = pod("Always", &["i1", "i2"], &["a"]);
    let w = || World::default().sandbox("s0", 0, true);
    let rows: Vec<(World, Vec<Action>)> = vec![
        (w().run("i1", 0, "s0", St::Running), vec![]),
        (
            w().run("i1", 0, "s0", St::Created),
            vec![Action::StartContainer {
                id: "i1-0".into(),
                name: "i1".into(),
            }],
        ),
        (
            w().run("i1", 0, "s0", St::Exited(0, 1)),
            vec![create("i2", true, 0, false)],
        ),
        (
            w().run("i1", 0, "s0", St::Exited(0, 9))
                .run("i2", 0, "s0", St::Exited(0, 1)),
            vec![create("a", false, 0, false)],
        ),
        // A failed init container restarts (Always and OnFailure alike) before
        // anything after it runs.
        (
            w().run("i1", 0, "s0", St::Exited(1, 1)),
            vec![create("i1", true, 1, true)],
        ),
    ];
    for (i, (w, want)) in rows.iter().enumerate() {
        assert_eq!(&actions(w, &p), want, "row {i}");
    }
    let p = pod("OnFailure", &["i1", "i2"], &["a"]);
    assert_eq!(
        actions(&w().run("i1", 0, "s0", St::Exited(2, 1)), &p),
        [create("i1", true, 1, true)]
    );
}

#[test]
fn a_failed_init_container_fails_a_never_pod() {
    let p = pod("Never", &["i1"], &["a"]);
    let w = World::default()
        .sandbox("s0", 0, true)
        .run("i1", 0, "s0", St::Exited(1, 1));
    assert_eq!(w.plan(&p), Plan::default(), "nothing runs after it");
}

#[test]
fn restart_policy_decides_which_exits_restart() {
    // (policy, exit code, restarts?)
    let rows = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 137, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ];
    for (policy, code, restarts) in rows {
        let p = pod(policy, &[], &["a"]);
        let w = World::default()
            .sandbox("s0", 0, true)
            .run("a", 0, "s0", St::Exited(code, 1));
        let want = if restarts {
            vec![create("a", false, 1, true)]
        } else {
            vec![]
        };
        assert_eq!(actions(&w, &p), want, "{policy} exit {code}");
    }
}

#[test]
fn crash_back_off_waits_then_restarts_and_reports_why() {
    let p = pod("Always", &[], &["a"]);
    // Restarted once: the next restart waits 10 s after the exit.
    let w = World::default()
        .sandbox("s0", 0, true)
        .run("a", 0, "s0", St::Exited(1, 3))
        .restarted("a", 1);
    let plan = w.plan(&p);
    assert_eq!(plan.actions, []);
    assert_eq!(
        plan.waiting,
        [(
            "a".to_string(),
            Some((
                "CrashLoopBackOff".to_string(),
                "back-off 10s restarting failed container=a pod=p".to_string()
            ))
        )]
    );
    // Past the delay it restarts.
    let w = World::default()
        .sandbox("s0", 0, true)
        .run("a", 0, "s0", St::Exited(1, 11))
        .restarted("a", 1);
    assert_eq!(actions(&w, &p), [create("a", false, 1, true)]);
    // Restarted three times: 40 s.
    let w = World::default()
        .sandbox("s0", 0, true)
        .run("a", 0, "s0", St::Exited(1, 39))
        .restarted("a", 3);
    assert_eq!(actions(&w, &p), []);
}

#[test]
fn a_restart_removes_older_dead_runs_but_keeps_the_last() {
    let p = pod("Always", &[], &["a"]);
    let w = World::default()
        .sandbox("s0", 0, true)
        .run("a", 0, "s0", St::Exited(1, 90))
        .run("a", 1, "s0", St::Exited(1, 30));
    assert_eq!(
        actions(&w, &p),
        [
            Action::RemoveContainer { id: "a-0".into() },
            create("a", false, 2, true)
        ]
    );
}

#[test]
fn running_containers_clear_their_waiting_reason_and_failed_probes_kill() {
    let p = pod("Always", &[], &["a", "b"]);
    let w = World::default()
        .sandbox("s0", 0, true)
        .run("a", 0, "s0", St::Running)
        .run("b", 0, "s0", St::Running)
        .probe_kill("b", Kind::Liveness);
    let plan = w.plan(&p);
    assert_eq!(
        plan.actions,
        [Action::StopContainer {
            id: "b-0".into(),
            name: "b".into(),
            grace: 30,
            why: StopReason::Probe(
                Kind::Liveness,
                "HTTP probe failed with statuscode: 500".into()
            )
        }]
    );
    assert_eq!(
        plan.waiting,
        [("a".to_string(), None), ("b".to_string(), None)]
    );
    // The pod's terminationGracePeriodSeconds applies, unless the probe has its own.
    let grace = |pod_grace, probe_grace| {
        let mut p = pod("Always", &[], &["a", "b"]);
        let spec = p.spec.as_mut().unwrap();
        spec.termination_grace_period_seconds = Some(pod_grace);
        spec.containers[1].liveness_probe = Some(k8s_openapi::api::core::v1::Probe {
            termination_grace_period_seconds: probe_grace,
            ..Default::default()
        });
        match w.plan(&p).actions.remove(0) {
            Action::StopContainer { grace, .. } => grace,
            a => panic!("{a:?}"),
        }
    };
    assert_eq!(grace(60, None), 60);
    assert_eq!(grace(60, Some(3)), 3);
}

#[test]
fn a_lost_sandbox_is_replaced_and_every_container_runs_again() {
    let p = pod("Always", &["i1"], &["a"]);
    let w = World::default()
        .sandbox("s0", 0, false)
        .run("i1", 0, "s0", St::Exited(0, 60))
        .run("a", 0, "s0", St::Running);
    // The init container runs again first; the app container waits for it.
    assert_eq!(
        actions(&w, &p),
        [
            stop_sandbox("s0"),
            Action::CreateSandbox { attempt: 1 },
            create("i1", true, 1, true)
        ]
    );
    // Without init containers, a container left running in the dead sandbox is
    // stopped and replaced.
    let p = pod("Always", &[], &["a"]);
    let w = World::default()
        .sandbox("s0", 0, false)
        .run("a", 0, "s0", St::Running);
    let plan = actions(&w, &p);
    assert_eq!(
        plan[..3],
        [
            stop_sandbox("s0"),
            Action::CreateSandbox { attempt: 1 },
            Action::StopContainer {
                id: "a-0".into(),
                name: "a".into(),
                grace: 0,
                why: StopReason::Orphaned
            },
        ]
    );
    assert!(
        matches!(&plan[3], Action::CreateContainer { name, attempt: 1, .. } if name == "a"),
        "{plan:?}"
    );
}

#[test]
fn a_never_pod_whose_sandbox_died_is_not_started_again() {
    let p = pod("Never", &[], &["a"]);
    let w = World::default()
        .sandbox("s0", 0, false)
        .run("a", 0, "s0", St::Exited(137, 1));
    assert_eq!(actions(&w, &p), [stop_sandbox("s0")]);
    // Its first sandbox is created as for any pod.
    assert_eq!(
        actions(&World::default(), &p)[0],
        Action::CreateSandbox { attempt: 0 }
    );
}

#[test]
fn a_finished_pod_only_gives_back_its_network() {
    let mut p = pod("OnFailure", &[], &["a"]);
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    let w = World::default()
        .sandbox("s0", 0, false)
        .sandbox("s1", 1, true)
        .run("a", 0, "s1", St::Exited(0, 1));
    assert_eq!(
        w.plan(&p),
        Plan {
            actions: vec![stop_sandbox("s1")],
            waiting: vec![]
        }
    );
}
