use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const T0: u64 = 1_796_000_000;

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_millis(ms)
}

fn annotations(start_ms: u64, dur_ms: u64, detail: Option<&str>) -> BTreeMap<String, String> {
    Step {
        start: at(start_ms),
        duration: Duration::from_millis(dur_ms),
        detail: detail.map(String::from),
    }
    .annotations()
}

fn event(reason: &str, field: Option<&str>, component: &str, step: Option<(u64, u64)>) -> Event {
    let mut e: Event = serde_json::from_value(json!({
        "metadata": {"name": format!("e-{reason}"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "uid": "u1", "fieldPath": field},
        "reason": reason, "message": format!("{reason} message"), "type": "Normal",
        "reportingComponent": component, "reportingInstance": "n1",
    }))
    .unwrap();
    e.metadata.annotations = step.map(|(s, d)| annotations(s, d, None));
    e
}

fn pod(status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u1",
                     "creationTimestamp": "2026-11-30T00:53:20Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": status,
    }))
    .unwrap()
}

fn steps(t: &Trace) -> Vec<&str> {
    t.rows.iter().map(|r| r.step.as_str()).collect()
}

fn started_pod_events() -> Vec<Event> {
    let c = Some("spec.containers{c}");
    let mut sandbox = event("SandboxReady", None, "kubelet", Some((20, 100)));
    sandbox
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(trace::SEEN.into(), trace::micro_time(at(15)));
    vec![
        event("Scheduled", None, "default-scheduler", Some((5, 3))),
        sandbox,
        event("Pulled", c, "kubelet", Some((121, 2))),
        event("Created", c, "kubelet", Some((124, 30))),
        event("Started", c, "kubelet", Some((155, 40))),
        event("PodReady", None, "kubelet", Some((190, 10))),
        // Events without a step (Pulling, an old-style event) are not steps.
        event("Pulling", c, "kubelet", None),
    ]
}

#[test]
fn a_started_pod_shows_every_step_in_order_with_its_measurer() {
    let p = pod(json!({"phase": "Running"}));
    let events = started_pod_events();
    let t = assemble(&Inputs {
        pod: &p,
        pod_events: &events,
        owner_events: &[],
        slices: &[],
        slice_events: &[],
    });
    assert_eq!(
        steps(&t),
        [
            "created",
            "scheduled",
            "kubelet saw it",
            "sandbox",
            "image c",
            "create c",
            "start c",
            "ready"
        ]
    );
    assert_eq!(
        t.rows[0].by, "kube-apiserver",
        "a bare pod: its creationTimestamp"
    );
    assert_eq!(t.rows[1].by, "default-scheduler");
    assert_eq!(t.rows[3].by, "kubelet/n1");
    // The kubelet's own step runs from when it saw the pod to the sandbox request.
    assert_eq!(t.rows[2].duration, Some(Duration::from_millis(5)));
    let starts: Vec<_> = t.rows.iter().map(|r| r.start.unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    assert!(t.complete(), "no Service selects it: ready is the end");
}

#[test]
fn a_pod_made_by_a_replicaset_and_served_shows_the_controllers_and_each_node() {
    let p = pod(json!({"phase": "Running"}));
    let mut p = p;
    p.metadata.owner_references = Some(vec![serde_json::from_value(json!(
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs1", "controller": true}
    ))
    .unwrap()]);
    let mut rs_event = event(
        "SuccessfulCreate",
        None,
        "replicaset-controller",
        Some((0, 4)),
    );
    rs_event.message = Some("Created pod: web-1".into());
    let mut other = event(
        "SuccessfulCreate",
        None,
        "replicaset-controller",
        Some((0, 4)),
    );
    other.message = Some("Created pod: web-2".into());
    let mut slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "default", "uid": "s1"},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.5"], "targetRef": {"uid": "u1"}}],
    }))
    .unwrap();
    slice.metadata.annotations = Some(annotations(205, 2, Some("1 endpoints, 1 ready")));
    let mut programmed = event("RulesProgrammed", None, "kube-proxy", Some((210, 8)));
    programmed.involved_object.uid = Some("s1".into());
    let events = started_pod_events();
    let t = assemble(&Inputs {
        pod: &p,
        pod_events: &events,
        owner_events: &[other, rs_event],
        slices: &[slice],
        slice_events: &[programmed],
    });
    assert_eq!(t.rows[0].by, "replicaset-controller");
    assert_eq!(t.rows[0].detail, "Created pod: web-1");
    let tail: Vec<_> = steps(&t).into_iter().rev().take(2).collect();
    assert_eq!(tail, ["rules on n1", "endpointslice web-abc"]);
    assert_eq!(t.rows.last().unwrap().by, "kube-proxy/n1");
    assert!(t.complete());
}

#[test]
fn a_pod_that_cannot_be_scheduled_says_why_and_stops_there() {
    let p = pod(json!({"phase": "Pending"}));
    let mut failed = event("FailedScheduling", None, "default-scheduler", None);
    failed.type_ = Some("Warning".into());
    failed.message = Some("0/1 nodes are available: 1 Insufficient cpu.".into());
    let t = assemble(&Inputs {
        pod: &p,
        pod_events: &[failed],
        owner_events: &[],
        slices: &[],
        slice_events: &[],
    });
    assert_eq!(steps(&t), ["created", "scheduled"]);
    let last = t.rows.last().unwrap();
    assert!(last.pending);
    assert_eq!(
        last.detail,
        "FailedScheduling: 0/1 nodes are available: 1 Insufficient cpu."
    );
    assert!(!t.complete());
}

#[test]
fn a_container_waiting_on_its_image_shows_the_waiting_reason() {
    let p = pod(
        json!({"phase": "Pending", "containerStatuses": [{"name": "c", "image": "busybox",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"busybox\""}}}]}),
    );
    let events: Vec<Event> = started_pod_events().into_iter().take(2).collect();
    let t = assemble(&Inputs {
        pod: &p,
        pod_events: &events,
        owner_events: &[],
        slices: &[],
        slice_events: &[],
    });
    let last = t.rows.last().unwrap();
    assert_eq!(last.step, "image c");
    assert_eq!(
        last.detail,
        "c: ImagePullBackOff: Back-off pulling image \"busybox\""
    );
}
