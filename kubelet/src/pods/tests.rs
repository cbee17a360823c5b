//! The pod sync end to end without root: the kubelet against the in-process fake
//! runtime (`cri::fake`) and a fake API server that records what the kubelet posts.
//! Each test moves the world (a container exits, a sandbox dies, a probe fails) and
//! checks what the kubelet does about it and what it reports.

use super::Kubelet;
use crate::cri::fake::FakeRuntime;
use crate::Config;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use skiff_cri::v1;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (method, path, body) of every request the kubelet made.
#[derive(Clone, Default)]
struct ApiLog(Arc<Mutex<Vec<(String, String, Value)>>>);

fn not_found() -> (u16, Value) {
    let s = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found"});
    (404, s)
}

/// Answers as the API server would for the calls the pod sync makes.
fn answer(method: &http::Method, path: &str, body: &Value) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"]) => (
            200,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns}, "status": body["status"]}),
        ),
        ("POST", ["api", "v1", "namespaces", _, "events"]) => (201, body.clone()),
        ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => (
            200,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}}),
        ),
        _ => not_found(),
    }
}

fn fake_client(log: &ApiLog) -> kube::Client {
    let log = log.clone();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let (code, out) = answer(&parts.method, &path, &body);
            log.0
                .lock()
                .unwrap()
                .push((parts.method.to_string(), path, body));
            let resp = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&out).unwrap()))
                .unwrap();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    kube::Client::new(svc, "default")
}

struct Node {
    k: Arc<Kubelet<FakeRuntime>>,
    rt: FakeRuntime,
    api: ApiLog,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    fn new(test: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("skiff-kubelet-{test}-{}", std::process::id()));
        let mut cfg = Config::new(
            "node-1".into(),
            "127.0.0.1".parse().unwrap(),
            "unix:///nonexistent".into(),
        );
        cfg.root_dir = dir.join("root");
        cfg.pod_log_dir = dir.join("logs");
        let rt = FakeRuntime::default();
        let api = ApiLog::default();
        let k = Kubelet::new(cfg, fake_client(&api), rt.clone());
        Node { k, rt, api, dir }
    }

    /// One sync pass, waited for to the end.
    async fn sync(&self, pod: &Pod) {
        self.k
            .sync_all(vec![Arc::new(pod.clone())])
            .await
            .expect("sync pass");
        for _ in 0..5000 {
            if self.k.state.lock().unwrap().busy.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the pod's sync did not finish in 5 s");
    }

    /// The last status the kubelet posted.
    fn status(&self) -> Value {
        let log = self.api.0.lock().unwrap();
        log.iter()
            .rev()
            .find(|(m, p, _)| m == "PATCH" && p.ends_with("/status"))
            .map(|(_, _, b)| b["status"].clone())
            .expect("no status posted")
    }

    fn container_status(&self, name: &str) -> Value {
        let s = self.status();
        let all = [&s["initContainerStatuses"], &s["containerStatuses"]];
        all.iter()
            .filter_map(|l| l.as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no status for {name} in {s}"))
    }

    /// (reason, involved fieldPath) of every event posted.
    fn events(&self) -> Vec<(String, String)> {
        let log = self.api.0.lock().unwrap();
        log.iter()
            .filter(|(m, p, _)| m == "POST" && p.ends_with("/events"))
            .map(|(_, _, b)| {
                (
                    b["reason"].as_str().unwrap_or("").to_string(),
                    b["involvedObject"]["fieldPath"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    fn calls(&self, name: &str) -> usize {
        self.rt.world().calls.iter().filter(|c| *c == name).count()
    }

    /// The one ready sandbox and (name, attempt, state) of the containers in it.
    fn ready(&self) -> (String, Vec<(String, u32, i32)>) {
        let w = self.rt.world();
        let ready: Vec<_> = w.sandboxes().into_iter().filter(|s| s.2).collect();
        assert_eq!(ready.len(), 1, "{:?}", w.sandboxes());
        let id = ready[0].0.clone();
        let mut cs = w.containers_in(&id);
        cs.sort();
        (id, cs)
    }
}

fn pod(policy: &str, inits: &[&str], apps: &[Value]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": {
            "restartPolicy": policy,
            "nodeName": "node-1",
            "initContainers": inits.iter()
                .map(|n| json!({"name": n, "image": "busybox:1"})).collect::<Vec<_>>(),
            "containers": apps,
        }
    }))
    .unwrap()
}

fn app(name: &str) -> Value {
    json!({"name": name, "image": "busybox:1"})
}

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const EXITED: i32 = v1::ContainerState::ContainerExited as i32;

#[tokio::test]
async fn init_containers_run_in_order_then_the_app_and_the_pod_is_running() {
    let n = Node::new("init");
    let p = pod("Always", &["i1", "i2"], &[app("a")]);
    n.sync(&p).await;
    let (_, cs) = n.ready();
    assert_eq!(cs, [("i1".into(), 0, RUNNING)]);
    assert_eq!(n.status()["phase"], "Pending");
    assert_eq!(
        n.container_status("a")["state"]["waiting"]["reason"],
        "PodInitializing"
    );

    n.sync(&p).await;
    assert_eq!(n.ready().1.len(), 1, "i2 waits while i1 runs");
    n.rt.exit("i1", 0);
    n.sync(&p).await;
    n.rt.exit("i2", 0);
    n.sync(&p).await;
    let (_, cs) = n.ready();
    assert_eq!(
        cs,
        [
            ("a".into(), 0, RUNNING),
            ("i1".into(), 0, EXITED),
            ("i2".into(), 0, EXITED)
        ]
    );
    assert_eq!(n.status()["phase"], "Running");
    assert_eq!(n.container_status("a")["ready"], true);
    assert_eq!(
        n.container_status("i1")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(n.calls("RunPodSandbox"), 1);
    assert_eq!(n.calls("PullImage"), 1, "pulled once, then present");
    let started: Vec<_> = n
        .events()
        .into_iter()
        .filter(|(r, _)| r == "Started")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        started,
        [
            "spec.initContainers{i1}",
            "spec.initContainers{i2}",
            "spec.containers{a}"
        ]
    );
}

#[tokio::test]
async fn a_crashing_container_restarts_at_once_then_backs_off() {
    let n = Node::new("crash");
    let p = pod("Always", &[], &[app("a")]);
    n.sync(&p).await;
    n.rt.exit("a", 1);
    n.sync(&p).await;
    assert_eq!(
        n.ready().1,
        [("a".into(), 0, EXITED), ("a".into(), 1, RUNNING)],
        "restarted at once; the dead run stays for lastState"
    );
    n.rt.exit("a", 1);
    n.sync(&p).await;
    // The second restart waits 10 s: the container stays dead and says why.
    assert_eq!(n.calls("CreateContainer"), 2);
    let a = n.container_status("a");
    assert_eq!(a["state"]["waiting"]["reason"], "CrashLoopBackOff", "{a}");
    assert!(
        a["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=a pod=web"),
        "{a}"
    );
    assert_eq!(a["restartCount"], 1);
    assert_eq!(a["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(n.status()["phase"], "Running");
    n.sync(&p).await;
    assert_eq!(n.calls("CreateContainer"), 2, "still backing off");
}

#[tokio::test]
async fn restart_policy_on_failure_and_never_end_the_pod() {
    let n = Node::new("onfailure");
    let p = pod("OnFailure", &[], &[app("a")]);
    n.sync(&p).await;
    n.rt.exit("a", 0);
    n.sync(&p).await;
    assert_eq!(n.calls("CreateContainer"), 1, "a success is not restarted");
    assert_eq!(n.status()["phase"], "Succeeded");

    let n = Node::new("never");
    let p = pod("Never", &[], &[app("a"), app("b")]);
    n.sync(&p).await;
    n.rt.exit("a", 3);
    n.rt.exit("b", 0);
    n.sync(&p).await;
    assert_eq!(n.calls("CreateContainer"), 2);
    assert_eq!(n.status()["phase"], "Failed");
    // Once the API has it as Failed, the kubelet gives the network back and nothing else.
    let mut done = p.clone();
    done.status = serde_json::from_value(json!({"phase": "Failed"})).unwrap();
    n.sync(&done).await;
    assert!(n.rt.world().sandboxes().iter().all(|s| !s.2));
    assert_eq!(n.calls("CreateContainer"), 2);
}

#[tokio::test]
async fn a_lost_sandbox_is_replaced_and_its_containers_run_again() {
    let n = Node::new("sandbox");
    let p = pod("Always", &["init"], &[app("a")]);
    n.sync(&p).await;
    n.rt.exit("init", 0);
    n.sync(&p).await;
    let (first, _) = n.ready();
    n.rt.lose_sandboxes();
    n.sync(&p).await;
    let (second, cs) = n.ready();
    assert_ne!(first, second);
    assert_eq!(
        n.rt.world()
            .sandboxes()
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>(),
        [0, 1],
        "the new sandbox is attempt 1"
    );
    // Init containers first again, in the new sandbox.
    assert_eq!(cs, [("init".into(), 1, RUNNING)]);
    n.rt.exit("init", 0);
    n.sync(&p).await;
    assert!(n.ready().1.contains(&("a".into(), 1, RUNNING)));
    assert_eq!(n.status()["phase"], "Running");
}

#[tokio::test]
async fn a_failing_liveness_probe_kills_the_container_and_it_restarts() {
    let n = Node::new("probe");
    let mut a = app("a");
    a["livenessProbe"] = json!({"exec": {"command": ["check"]},
        "periodSeconds": 1, "failureThreshold": 1});
    let p = pod("Always", &[], &[a]);
    n.sync(&p).await;
    n.sync(&p).await;
    assert_eq!(n.calls("ExecSync"), 1, "probed while running");
    assert_eq!(n.ready().1, [("a".into(), 0, RUNNING)], "a passing probe");

    n.rt.world().exec_exit.insert("a".into(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    n.sync(&p).await;
    assert_eq!(n.ready().1, [("a".into(), 0, EXITED)], "killed");
    let reasons: Vec<_> = n.events().into_iter().map(|(r, _)| r).collect();
    let at = |r: &str| reasons.iter().position(|x| x == r);
    assert!(
        at("Unhealthy") < at("Killing") && at("Killing").is_some(),
        "{reasons:?}"
    );
    n.sync(&p).await;
    let (_, cs) = n.ready();
    assert!(cs.contains(&("a".into(), 1, RUNNING)), "restarted: {cs:?}");
}

#[tokio::test]
async fn a_container_with_a_readiness_probe_is_not_ready_before_the_probe_passes() {
    let n = Node::new("readiness");
    let mut a = app("a");
    a["readinessProbe"] = json!({"exec": {"command": ["check"]}, "periodSeconds": 1});
    let p = pod("Always", &[], &[a]);
    n.sync(&p).await;
    // Started in this pass: no probe has run yet.
    assert_eq!(n.ready().1, [("a".into(), 0, RUNNING)]);
    let a = n.container_status("a");
    assert_eq!(a["ready"], false, "{a}");
    let ready = |n: &Node| {
        n.status()["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    assert!(!ready(&n));
    n.sync(&p).await;
    assert_eq!(n.calls("ExecSync"), 1);
    assert_eq!(n.container_status("a")["ready"], true);
    assert!(ready(&n));
    assert!(n.events().iter().any(|(r, _)| r == "PodReady"));
}

#[tokio::test]
async fn a_failed_pull_waits_in_image_pull_back_off() {
    let n = Node::new("pull");
    n.rt.world().unpullable.insert("busybox:1".into());
    let p = pod("Always", &[], &[app("a")]);
    n.sync(&p).await;
    let a = n.container_status("a");
    assert_eq!(a["state"]["waiting"]["reason"], "ErrImagePull", "{a}");
    n.sync(&p).await;
    let a = n.container_status("a");
    assert_eq!(a["state"]["waiting"]["reason"], "ImagePullBackOff", "{a}");
    assert_eq!(n.calls("PullImage"), 1, "no second pull within 10 s");
    assert_eq!(n.calls("CreateContainer"), 0);
    assert!(n.events().iter().any(|(r, _)| r == "BackOff"));
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_removed_and_then_deleted_for_good() {
    let n = Node::new("delete");
    let p = pod("Always", &[], &[app("a")]);
    n.sync(&p).await;
    let mut gone = p.clone();
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    gone.metadata.deletion_grace_period_seconds = Some(7);
    n.sync(&gone).await;
    assert!(n.rt.world().sandboxes().is_empty(), "sandbox removed");
    let log = n.api.0.lock().unwrap();
    let (_, path, body) = log
        .iter()
        .find(|(m, _, _)| m == "DELETE")
        .expect("the pod is deleted");
    assert_eq!(path, "/api/v1/namespaces/default/pods/web");
    assert_eq!(body["gracePeriodSeconds"], 0);
    assert_eq!(body["preconditions"]["uid"], "uid-1");
}

#[tokio::test]
async fn a_runtime_that_is_down_is_an_error_not_an_empty_node() {
    let n = Node::new("down");
    let p = pod("Always", &[], &[app("a")]);
    n.sync(&p).await;
    n.rt.world().down = true;
    let e = n.k.sync_all(vec![Arc::new(p.clone())]).await;
    assert!(
        matches!(&e, Err(super::SyncError::Cri(s)) if s.code() == tonic::Code::Unavailable),
        "{:?}",
        e.err()
    );
    n.rt.world().down = false;
    n.sync(&p).await;
    assert_eq!(n.calls("RunPodSandbox"), 1, "nothing was recreated");
}
