//! The seed's story with the real kubectl: apply a Deployment, its ReplicaSet keeps the
//! pods at the desired count (deleted pods are recreated, scaling adds or removes), the
//! scheduler binds pods to nodes by CPU and memory, and deleting the Deployment cascades.

mod common;
use common::{Backend, Server};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubectl() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
        "/usr/bin/kubectl",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

struct Cp {
    addr: String,
    k: std::path::PathBuf,
}

impl Cp {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut c = Command::new(&self.k);
        c.arg("--server")
            .arg(format!("http://{}", self.addr))
            .args(args)
            .env("KUBECONFIG", "/dev/null");
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let o = ch.wait_with_output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    fn apply(&self, yaml: &str) {
        let (ok, out) = self.run(&["apply", "-f", "-"], Some(yaml));
        assert!(ok, "{out}");
    }

    fn eventually(&self, args: &[&str], what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, out) = self.run(args, None);
            if f(&out) {
                return out;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; last output:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The API server and controllers on a fresh store, served on a loopback port.
fn start_cp(
    k: std::path::PathBuf,
    backend: &Backend,
    cfg: skiff_control::controllers::Config,
) -> (Cp, Server, skiff_control::store::Store) {
    let store = backend.store();
    // The server first: it makes the system namespaces the controllers write into.
    let server = Server::serve(store.clone());
    skiff_control::controllers::start_with(store.clone(), cfg);
    (
        Cp {
            addr: server.addr.clone(),
            k,
        },
        server,
        store,
    )
}

/// Stands in for kubelets: a pod bound to a node becomes Running and Ready shortly after,
/// one pod per round, so rollouts proceed step by step; a pod being deleted is "stopped"
/// and removed (the kubelet's final delete, grace period 0).
fn fake_kubelet(
    store: skiff_control::store::Store,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for kv in store.list("/registry/core/pods/").unwrap().0 {
                let mut p: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
                if p["metadata"]["deletionTimestamp"].is_string()
                    && p["spec"]["nodeName"].is_string()
                    && p["metadata"]["finalizers"].is_null()
                {
                    let _ = store.delete(
                        &kv.key,
                        skiff_control::store::Precondition::Revision(kv.mod_revision),
                    );
                    continue;
                }
                let ready = p["status"]["conditions"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                // Only pods bound to a node run.
                if ready
                    || p["metadata"]["deletionTimestamp"].is_string()
                    || p["spec"]["nodeName"].is_null()
                {
                    continue;
                }
                p["status"]["phase"] = serde_json::json!("Running");
                let mut conds = p["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conds.push(serde_json::json!({"type": "Ready", "status": "True"}));
                p["status"]["conditions"] = serde_json::json!(conds);
                let _ = store.put(
                    &kv.key,
                    serde_json::to_vec(&p).unwrap(),
                    skiff_control::store::Precondition::Revision(kv.mod_revision),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn deployment(replicas: u32, cpu: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: nginx\n        image: nginx\n        resources:\n          requests: {{cpu: '{cpu}', memory: 64Mi}}\n"
    )
}

fn node(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nstatus:\n  allocatable: {{cpu: '2', memory: 4Gi, pods: '110'}}\n  conditions: [{{type: Ready, status: 'True'}}]\n")
}

#[test]
fn deployment_replicaset_pods_scheduling_and_gc() {
    deployment_replicaset_pods_scheduling_and_gc_on(Backend::embedded(
        "deployment_replicaset_pods_scheduling_an",
    ));
}

#[test]
#[ignore = "needs etcd"]
fn deployment_replicaset_pods_scheduling_and_gc_on_etcd() {
    {
        let b = Backend::etcd("deployment_replicaset_pods_scheduling_an");
        deployment_replicaset_pods_scheduling_and_gc_on(b);
    }
}

fn deployment_replicaset_pods_scheduling_and_gc_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    let (cp, _server, store) = start_cp(k, &backend, skiff_control::controllers::Config::default());
    // Deleted pods on nodes wait for their kubelet's final delete.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubelet = fake_kubelet(store.clone(), stop.clone());
    let pods = |out: &str| out.lines().filter(|l| l.starts_with("pod/")).count();

    cp.apply(&node("node-1"));
    cp.apply(&node("node-2"));
    cp.apply(&deployment(4, "100m"));
    cp.eventually(&["get", "pods", "-o", "name"], "4 pods", |o| pods(o) == 4);
    let placed = cp.eventually(
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ],
        "all pods bound",
        |o| o.lines().filter(|l| l.starts_with("node-")).count() == 4,
    );
    assert_eq!(
        placed.lines().filter(|l| *l == "node-1").count(),
        2,
        "replicas spread over the nodes: {placed}"
    );
    let rs = cp.run(&["get", "rs", "-o", "name"], None).1;
    assert!(
        rs.trim().starts_with("replicaset.apps/web-") && rs.lines().count() == 1,
        "{rs}"
    );

    // A deleted pod is recreated whole, under a new name.
    let (_, names) = cp.run(&["get", "pods", "-o", "name"], None);
    let victim = names.lines().next().unwrap().to_string();
    assert!(cp.run(&["delete", &victim, "--wait=false"], None).0);
    let after = cp.eventually(&["get", "pods", "-o", "name"], "replacement pod", |o| {
        pods(o) == 4 && !o.contains(&victim)
    });
    assert!(!after.contains(&victim));

    // Scale up and down by applying a new replica count.
    cp.apply(&deployment(6, "100m"));
    cp.eventually(&["get", "pods", "-o", "name"], "6 pods", |o| pods(o) == 6);
    cp.apply(&deployment(2, "100m"));
    cp.eventually(&["get", "pods", "-o", "name"], "2 pods", |o| pods(o) == 2);
    cp.eventually(
        &["get", "deploy", "web", "-o", "jsonpath={.status.replicas}"],
        "deployment status",
        |o| o == "2",
    );

    // kubectl scale goes through the scale subresource.
    let (ok, out) = cp.run(&["scale", "deployment", "web", "--replicas=3"], None);
    assert!(ok && out.contains("scaled"), "{out}");
    cp.eventually(
        &["get", "pods", "-o", "name"],
        "3 pods after kubectl scale",
        |o| pods(o) == 3,
    );
    assert_eq!(
        cp.run(
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
            None
        )
        .1,
        "3"
    );

    // A template that fits nowhere: the pods stay pending with the scheduler's reason.
    cp.apply(&deployment(2, "3"));
    let why = cp.eventually(
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[0].message}{\"\\n\"}{end}",
        ],
        "FailedScheduling reason",
        |o| o.contains("Insufficient cpu"),
    );
    assert!(
        why.contains("0/2 nodes are available: 2 Insufficient cpu."),
        "{why}"
    );
    assert_eq!(
        cp.run(&["get", "rs", "-o", "name"], None).1.lines().count(),
        2,
        "old and new ReplicaSet"
    );

    // Deleting the Deployment cascades to ReplicaSets and Pods.
    assert!(
        cp.run(&["delete", "deployment", "web", "--wait=false"], None)
            .0
    );
    cp.eventually(&["get", "rs,pods", "-o", "name"], "cascading delete", |o| {
        o.trim().is_empty() || o.contains("No resources")
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    kubelet.join().unwrap();
}

#[test]
fn node_whose_lease_stops_goes_not_ready_and_its_pods_move() {
    node_whose_lease_stops_goes_not_ready_and_its_pods_move_on(Backend::embedded(
        "node_whose_lease_stops_goes_not_ready_an",
    ));
}

#[test]
#[ignore = "needs etcd"]
fn node_whose_lease_stops_goes_not_ready_and_its_pods_move_on_etcd() {
    {
        let b = Backend::etcd("node_whose_lease_stops_goes_not_ready_an");
        node_whose_lease_stops_goes_not_ready_and_its_pods_move_on(b);
    }
}

fn node_whose_lease_stops_goes_not_ready_and_its_pods_move_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    // Short timings instead of kube's 40 s grace and 300 s toleration.
    let cfg = skiff_control::controllers::Config {
        node_grace: Duration::from_secs(2),
        eviction_default: Duration::from_secs(2),
        ..Default::default()
    };
    let (cp, _server, _store) = start_cp(k, &backend, cfg);
    let lease = |node: &str| {
        let ts = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"])
            .output()
            .unwrap();
        let ts = String::from_utf8_lossy(&ts.stdout).trim().to_string();
        cp.apply(&format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {node}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {node}\n  renewTime: \"{ts}\"\n"));
    };
    cp.apply(&node("node-1"));
    cp.apply(&node("node-2"));
    lease("node-1");
    lease("node-2");
    cp.apply(&deployment(2, "100m"));
    let placed = cp.eventually(
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ],
        "pods on both nodes",
        |o| o.contains("node-1") && o.contains("node-2"),
    );
    assert_eq!(placed.lines().count(), 2);
    // The pod on node-1 is Ready (as its kubelet would report).
    let (_, on1) = cp.run(
        &[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node-1",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    let (ok, out) = cp.run(
        &[
            "patch",
            "pod",
            &on1,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
    // node-2 keeps renewing its lease; node-1 has gone silent. Its pod is evicted: it
    // stays Terminating (nobody can confirm it stopped) and a replacement runs on node-2.
    let placement = [
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ];
    let end = Instant::now() + Duration::from_secs(25);
    let mut moved = false;
    while Instant::now() < end {
        lease("node-2");
        let (_, pods) = cp.run(&placement, None);
        let live: Vec<&str> = pods
            .lines()
            .filter(|l| l.trim_end().ends_with("node-2"))
            .collect();
        let evicted: Vec<&str> = pods.lines().filter(|l| l.starts_with("node-1 ")).collect();
        if live.len() == 2
            && evicted.len() == 1
            && evicted[0].len() > "node-1 ".len()
            && pods.lines().count() == 3
        {
            moved = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, st) = cp.run(&["get", "nodes"], None);
    assert!(moved, "pods were not moved off node-1; nodes:\n{st}");
    assert!(
        st.lines()
            .any(|l| l.starts_with("node-1") && l.contains("NotReady")),
        "{st}"
    );
    let (_, taints) = cp.run(
        &[
            "get",
            "node",
            "node-1",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ],
        None,
    );
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // The node controller's events, as kube's: registered, then NotReady.
    let (_, events) = cp.run(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=node-1",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        None,
    );
    assert!(
        events.contains("RegisteredNode: Node node-1 event: Registered Node node-1 in Controller"),
        "{events}"
    );
    assert!(
        events.contains("NodeNotReady: Node node-1 status is now: NodeNotReady"),
        "{events}"
    );
    // Its pod was marked not Ready as soon as the node stopped reporting (kube's
    // MarkPodsNotReady), with the pod's own NodeNotReady event.
    let (_, ready) = cp.run(
        &[
            "get",
            "pod",
            &on1,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        None,
    );
    assert_eq!(ready.trim(), "False", "{on1}");
    let (_, pod_events) = cp.run(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={on1}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ],
        None,
    );
    assert!(
        pod_events.contains("Warning NodeNotReady: Node is not ready"),
        "{pod_events}"
    );
    // The operator declares node-1 dead (out-of-service taint): the pod GC deletes the
    // Terminating pod at once.
    let (ok, out) = cp.run(
        &[
            "taint",
            "node",
            "node-1",
            "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
        ],
        None,
    );
    assert!(ok, "{out}");
    // (node-2 keeps renewing meanwhile: the pod GC runs on its own period, as kube's.)
    let end = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        lease("node-2");
        let (_, o) = cp.run(&placement, None);
        if o.lines().count() == 2 {
            break o;
        }
        assert!(Instant::now() < end, "the evicted pod is not gone:\n{o}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(pods.lines().all(|l| l.trim() == "node-2"), "{pods}");
}

#[test]
fn rolling_update_rollout_status_undo_restart() {
    rolling_update_rollout_status_undo_restart_on(Backend::embedded(
        "rolling_update_rollout_status_undo_resta",
    ));
}

#[test]
#[ignore = "needs etcd"]
fn rolling_update_rollout_status_undo_restart_on_etcd() {
    {
        let b = Backend::etcd("rolling_update_rollout_status_undo_resta");
        rolling_update_rollout_status_undo_restart_on(b);
    }
}

fn rolling_update_rollout_status_undo_restart_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    let (cp, _server, store) = start_cp(k, &backend, Default::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubelet = fake_kubelet(store.clone(), stop.clone());
    cp.apply(&node("n1"));
    cp.apply(&node("n2"));
    let manifest = deployment(4, "100m").replace(
        "spec:\n  replicas: 4\n",
        "spec:\n  replicas: 4\n  revisionHistoryLimit: 2\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
    );
    cp.apply(&manifest);
    let (ok, out) = cp.run(
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    );
    assert!(ok && out.contains("successfully rolled out"), "{out}");

    // A new image rolls out one pod at a time: never more than 5 pods, never fewer than 4 ready.
    let (ok, out) = cp.run(&["set", "image", "deployment/web", "nginx=nginx:2"], None);
    assert!(ok, "{out}");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let pods: Vec<serde_json::Value> = store
            .list("/registry/core/pods/")
            .unwrap()
            .0
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect();
        let live = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .count();
        assert!(live <= 5, "maxSurge 1 allows 5 pods, saw {live}");
        let d: serde_json::Value = serde_json::from_slice(
            &store
                .get("/registry/apps/deployments/default/web")
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        let avail = d["status"]["availableReplicas"].as_i64().unwrap_or(0);
        assert!(
            avail >= 4 || d["status"]["observedGeneration"] != d["metadata"]["generation"],
            "maxUnavailable 0: {avail} available: {}",
            d["status"]
        );
        let new_pods = pods
            .iter()
            .filter(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
            .count();
        if new_pods == 4 && live == 4 {
            break;
        }
        assert!(
            Instant::now() < end,
            "rollout did not finish: {live} pods, {new_pods} new"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, out) = cp.run(
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    );
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (_, out) = cp.run(&["rollout", "history", "deployment/web"], None);
    assert!(out.contains("1 ") && out.contains("2 "), "{out}");

    // Undo takes revision 1's template back (as revision 3).
    let (ok, out) = cp.run(&["rollout", "undo", "deployment/web"], None);
    assert!(ok, "{out}");
    cp.eventually(
        &["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"],
        "undo to nginx as revision 3",
        |o| o == "nginx 3",
    );
    // Revision 1's ReplicaSet is scaled back up, not a new one made (kube's undo).
    let (_, sets) = cp.run(&["get", "rs", "-l", "app=web", "-o", "name"], None);
    assert_eq!(sets.lines().count(), 2, "{sets}");
    let (ok, out) = cp.run(
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    );
    assert!(ok, "{out}");
    // Restart: same spec, new pods (a template annotation), revision 4.
    let (ok, out) = cp.run(&["rollout", "restart", "deployment/web"], None);
    assert!(ok, "{out}");
    cp.eventually(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ],
        "revision 4",
        |o| o == "4",
    );
    let (ok, out) = cp.run(
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    );
    assert!(ok, "{out}");
    // History is kept to revisionHistoryLimit (2) old sets, plus the current one.
    let rs = cp.eventually(&["get", "rs", "-o", "name"], "old sets pruned", |o| {
        o.lines().count() == 3
    });
    assert_eq!(rs.lines().count(), 3, "{rs}");
    // kubectl scale still works during all this.
    let (ok, out) = cp.run(&["scale", "deployment/web", "--replicas=2"], None);
    assert!(ok, "{out}");
    cp.eventually(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.replicas}",
        ],
        "2 replicas",
        |o| o == "2",
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = kubelet.join();
}

#[test]
fn deletion_finalizers_cascades_and_namespaces() {
    deletion_finalizers_cascades_and_namespaces_on(Backend::embedded(
        "deletion_finalizers_cascades_and_namespa",
    ));
}

#[test]
#[ignore = "needs etcd"]
fn deletion_finalizers_cascades_and_namespaces_on_etcd() {
    {
        let b = Backend::etcd("deletion_finalizers_cascades_and_namespa");
        deletion_finalizers_cascades_and_namespaces_on(b);
    }
}

fn deletion_finalizers_cascades_and_namespaces_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    let (cp, _server, store) = start_cp(k, &backend, Default::default());
    let count = |prefix: &str| store.list(prefix).unwrap().0.len();

    // A finalizer holds the object (with a deletionTimestamp) until it is removed.
    cp.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n");
    let (ok, out) = cp.run(&["delete", "configmap", "held", "--wait=false"], None);
    assert!(ok, "{out}");
    let (_, ts) = cp.run(
        &[
            "get",
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
        None,
    );
    assert!(!ts.is_empty(), "held with a deletionTimestamp");
    let (ok, out) = cp.run(
        &[
            "patch",
            "configmap",
            "held",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
    assert_eq!(
        count("/registry/core/configmaps/default/held"),
        0,
        "gone with its last finalizer"
    );

    // Foreground: dependents first, then the owner; kubectl waits for it.
    cp.apply(&deployment(2, "10m"));
    cp.eventually(&["get", "pods", "-o", "name"], "2 pods", |o| {
        o.lines().count() == 2
    });
    let (ok, out) = cp.run(
        &[
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--timeout=20s",
        ],
        None,
    );
    assert!(ok, "{out}");
    assert_eq!(count("/registry/apps/deployments/default/"), 0);
    assert_eq!(count("/registry/apps/replicasets/default/"), 0);
    cp.eventually(&["get", "pods", "-o", "name"], "pods gone", |o| {
        o.trim().is_empty()
    });

    // Orphan: the ReplicaSet stays, without its owner reference.
    cp.apply(&deployment(1, "10m"));
    cp.eventually(&["get", "rs", "-o", "name"], "a replicaset", |o| {
        o.lines().count() == 1
    });
    let (ok, out) = cp.run(&["delete", "deployment", "web", "--cascade=orphan"], None);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, rs) = cp.run(
        &[
            "get",
            "rs",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ],
        None,
    );
    assert_eq!(count("/registry/apps/replicasets/default/"), 1);
    assert!(rs.trim().is_empty(), "orphaned: {rs}");

    // Namespaces: everything in them goes, then the namespace; nothing new while terminating.
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scratch\n");
    cp.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: scratch\n");
    cp.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pinned\n  namespace: scratch\n  finalizers: [example.com/hold]\n");
    let (ok, out) = cp.run(&["delete", "namespace", "scratch", "--wait=false"], None);
    assert!(ok, "{out}");
    cp.eventually(
        &[
            "get",
            "namespace",
            "scratch",
            "-o",
            "jsonpath={.status.phase}",
        ],
        "Terminating",
        |o| o == "Terminating",
    );
    let (ok, out) = cp.run(
        &["-n", "scratch", "apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n"),
    );
    assert!(!ok && out.contains("being terminated"), "{out}");
    cp.eventually(
        &["-n", "scratch", "get", "configmaps", "-o", "name"],
        "only the pinned one",
        |o| o.trim() == "configmap/pinned",
    );
    let (ok, out) = cp.run(
        &[
            "-n",
            "scratch",
            "patch",
            "configmap",
            "pinned",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":[]}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
    cp.eventually(
        &["get", "namespaces", "-o", "name"],
        "namespace gone",
        |o| !o.contains("namespace/scratch"),
    );
    assert_eq!(count("/registry/core/configmaps/scratch/"), 0);

    // spec.finalizers change only through namespaces/NAME/finalize (kube's rule): a
    // patch leaves them; the controller takes out only its own ("kubernetes"), so a
    // namespace with another one stays Terminating until someone finalizes it — the
    // well-known `kubectl replace --raw …/finalize` fix.
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: stuck\n");
    let fins = || {
        cp.run(
            &[
                "get",
                "namespace",
                "stuck",
                "-o",
                "jsonpath={.spec.finalizers}",
            ],
            None,
        )
        .1
    };
    let (ok, out) = cp.run(
        &[
            "patch",
            "namespace",
            "stuck",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"finalizers":["example.com/x"]}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
    assert_eq!(fins(), r#"["kubernetes"]"#);
    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"stuck"},"spec":{"finalizers":["kubernetes","example.com/hold"]}}"#;
    let (ok, out) = cp.run(
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/stuck/finalize",
            "-f",
            "-",
        ],
        Some(body),
    );
    assert!(ok, "{out}");
    assert_eq!(fins(), r#"["kubernetes","example.com/hold"]"#);
    let (ok, out) = cp.run(&["delete", "namespace", "stuck", "--wait=false"], None);
    assert!(ok, "{out}");
    cp.eventually(
        &[
            "get",
            "namespace",
            "stuck",
            "-o",
            "jsonpath={.spec.finalizers}",
        ],
        "the controller's finalizer out, the other kept",
        |o| o == r#"["example.com/hold"]"#,
    );
    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"stuck"},"spec":{"finalizers":[]}}"#;
    let (ok, out) = cp.run(
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/stuck/finalize",
            "-f",
            "-",
        ],
        Some(body),
    );
    assert!(ok, "{out}");
    cp.eventually(
        &["get", "namespaces", "-o", "name"],
        "finalized namespace gone",
        |o| !o.contains("namespace/stuck"),
    );
}

#[test]
fn endpoints_slices_events_and_node_cidrs() {
    endpoints_slices_events_and_node_cidrs_on(Backend::embedded(
        "endpoints_slices_events_and_node_cidrs",
    ));
}

#[test]
#[ignore = "needs etcd"]
fn endpoints_slices_events_and_node_cidrs_on_etcd() {
    {
        let b = Backend::etcd("endpoints_slices_events_and_node_cidrs");
        endpoints_slices_events_and_node_cidrs_on(b);
    }
}

fn endpoints_slices_events_and_node_cidrs_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    let (cp, _server, store) = start_cp(k, &backend, Default::default());
    // Node IPAM: distinct pod CIDRs from the cluster range.
    cp.apply(&node("n1"));
    cp.apply(&node("n2"));
    let cidrs = cp.eventually(
        &["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"],
        "pod CIDRs",
        |o| o.split_whitespace().count() == 2,
    );
    let c: Vec<&str> = cidrs.split_whitespace().collect();
    assert!(
        c.iter()
            .all(|x| x.starts_with("10.244.") && x.ends_with("/24"))
            && c[0] != c[1],
        "{cidrs}"
    );

    // A pod that fits nowhere gets a FailedScheduling event with the reason.
    cp.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests: {cpu: '64'}\n");
    let ev = cp.eventually(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge",
            "-o",
            "jsonpath={.items[*].reason}: {.items[*].message}",
        ],
        "FailedScheduling",
        |o| o.contains("FailedScheduling"),
    );
    assert!(ev.contains("Insufficient cpu"), "{ev}");
    // The Unschedulable condition is the scheduler's write, under its own name.
    let (_, managers) = cp.run(
        &[
            "get",
            "pod",
            "huge",
            "--show-managed-fields",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}/{.subresource} {end}",
        ],
        None,
    );
    assert!(managers.contains("default-scheduler/status"), "{managers}");
    let (_, describe) = cp.run(&["describe", "pod", "huge"], None);
    assert!(describe.contains("FailedScheduling"), "{describe}");
    cp.run(&["delete", "pod", "huge"], None);

    // Endpoints from a Service's selector: pods with IPs, ready ones as addresses.
    cp.apply(&deployment(2, "10m").replace(
        "      - name: nginx\n        image: nginx\n",
        "      - name: nginx\n        image: nginx\n        ports: [{name: http, containerPort: 8080}]\n",
    ));
    cp.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{name: web, port: 80, targetPort: http}]\n");
    // Stand in for the kubelets: IPs for both pods, only one Ready.
    let pods = cp.eventually(
        &["get", "pods", "-l", "app=web", "-o", "name"],
        "2 pods",
        |o| o.lines().count() == 2,
    );
    for (i, p) in pods.lines().enumerate() {
        let name = p.trim_start_matches("pod/");
        let key = format!("/registry/core/pods/default/{name}");
        let kv = store.get(&key).unwrap().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        v["status"]["podIP"] = serde_json::json!(format!("10.244.0.{}", 10 + i));
        v["status"]["conditions"] =
            serde_json::json!([{"type": "Ready", "status": if i == 0 { "True" } else { "False" }}]);
        store
            .put(
                &key,
                serde_json::to_vec(&v).unwrap(),
                skiff_control::store::Precondition::Revision(kv.mod_revision),
            )
            .unwrap();
    }
    let ep = cp.eventually(
        &["get", "endpoints", "web", "-o", "jsonpath={.subsets[0].addresses[*].ip}|{.subsets[0].notReadyAddresses[*].ip}|{.subsets[0].ports[0].port}"],
        "endpoints",
        |o| o == "10.244.0.10|10.244.0.11|8080",
    );
    assert_eq!(ep, "10.244.0.10|10.244.0.11|8080");
    let slice = cp.eventually(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].conditions.ready}|{.items[0].ports[0].port}",
        ],
        "endpointslice",
        |o| o == "true false|8080",
    );
    assert_eq!(slice, "true false|8080");
    // The service goes: its endpoints and slices go too.
    cp.run(&["delete", "service", "web"], None);
    cp.eventually(
        &["get", "endpoints,endpointslices", "-o", "name"],
        "endpoints gone",
        |o| o.trim().is_empty(),
    );
}

#[test]
fn daemonset_runs_one_pod_per_eligible_node() {
    daemonset_runs_one_pod_per_eligible_node_on(Backend::embedded(
        "daemonset_runs_one_pod_per_eligible_node",
    ));
}

#[test]
#[ignore = "needs etcd"]
fn daemonset_runs_one_pod_per_eligible_node_on_etcd() {
    {
        let b = Backend::etcd("daemonset_runs_one_pod_per_eligible_node");
        daemonset_runs_one_pod_per_eligible_node_on(b);
    }
}

fn daemonset_runs_one_pod_per_eligible_node_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    let (cp, _server, store) = start_cp(k, &backend, Default::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubelet = fake_kubelet(store.clone(), stop.clone());
    cp.apply(&node("n1"));
    cp.apply(&node("n2"));
    // A node with a taint the DaemonSet does not tolerate.
    cp.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: gpu\nspec:\n  taints: [{key: dedicated, value: gpu, effect: NoSchedule}]\nstatus:\n  conditions: [{type: Ready, status: 'True'}]\n");
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      labels: {app: agent}\n    spec:\n      containers:\n      - name: agent\n        image: agent:IMG\n";
    cp.apply(&ds.replace("IMG", "1"));
    let nodes = |o: &str| {
        let mut v: Vec<String> = o.split_whitespace().map(str::to_string).collect();
        v.sort();
        v.join(" ")
    };
    let on = cp.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        "pods on n1 and n2",
        |o| nodes(o) == "n1 n2",
    );
    assert_eq!(nodes(&on), "n1 n2");
    let (ok, out) = cp.run(
        &["rollout", "status", "daemonset/agent", "--timeout=20s"],
        None,
    );
    assert!(ok, "{out}");
    // A new node gets a pod; a node that goes loses it.
    cp.apply(&node("n3"));
    cp.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        "a pod on n3",
        |o| nodes(o) == "n1 n2 n3",
    );
    cp.run(&["delete", "node", "n1"], None);
    cp.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        "none on n1",
        |o| nodes(o) == "n2 n3",
    );
    // A new template rolls out node by node.
    cp.apply(&ds.replace("IMG", "2"));
    cp.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ],
        "every pod on agent:2",
        |o| o.split_whitespace().count() == 2 && o.split_whitespace().all(|i| i == "agent:2"),
    );
    let (ok, out) = cp.run(
        &["rollout", "status", "daemonset/agent", "--timeout=20s"],
        None,
    );
    assert!(ok, "{out}");
    let (_, st) = cp.run(&["get", "daemonset", "agent", "-o", "jsonpath={.status.desiredNumberScheduled}/{.status.updatedNumberScheduled}/{.status.numberReady}"], None);
    assert_eq!(st, "2/2/2");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = kubelet.join();
}

#[test]
fn graceful_pod_deletion_and_pod_gc() {
    graceful_pod_deletion_and_pod_gc_on(Backend::embedded("graceful_pod_deletion_and_pod_gc"));
}

#[test]
#[ignore = "needs etcd"]
fn graceful_pod_deletion_and_pod_gc_on_etcd() {
    {
        let b = Backend::etcd("graceful_pod_deletion_and_pod_gc");
        graceful_pod_deletion_and_pod_gc_on(b);
    }
}

fn graceful_pod_deletion_and_pod_gc_on(backend: Backend) {
    let k = kubectl().expect("needs kubectl");
    let cfg = skiff_control::controllers::Config {
        pod_gc_quarantine: Duration::from_secs(1),
        ..Default::default()
    };
    let (cp, _server, _store) = start_cp(k, &backend, cfg);
    let pod = |name: &str, spec: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}  containers:\n  - {{name: c, image: busybox}}\n")
    };
    let deletion = |name: &str| {
        cp.run(
            &[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.metadata.deletionGracePeriodSeconds}",
            ],
            None,
        )
    };
    cp.apply(&node("node-1"));
    cp.apply(&pod(
        "bound",
        "  nodeName: node-1\n  terminationGracePeriodSeconds: 20\n",
    ));
    // A pod on a node is deleted gracefully: it stays, Terminating, for the kubelet.
    let (ok, out) = cp.run(&["delete", "pod", "bound", "--wait=false"], None);
    assert!(ok, "{out}");
    assert_eq!(deletion("bound"), (true, "20".to_string()));
    let (_, table) = cp.run(&["get", "pod", "bound"], None);
    assert!(table.contains("Terminating"), "{table}");
    // Writes during the grace period (the kubelet's status updates) keep it.
    let (ok, out) = cp.run(&["label", "pod", "bound", "stopping=yes"], None);
    assert!(ok, "{out}");
    assert_eq!(deletion("bound"), (true, "20".to_string()));
    // A shorter grace period brings the end forward; a longer one changes nothing.
    for (g, want) in [("5", "5"), ("50", "5")] {
        let (ok, out) = cp.run(
            &[
                "delete",
                "pod",
                "bound",
                "--wait=false",
                "--grace-period",
                g,
            ],
            None,
        );
        assert!(ok, "{out}");
        assert_eq!(deletion("bound"), (true, want.to_string()));
    }
    // The kubelet's final delete (grace period 0) removes it.
    let (ok, out) = cp.run(
        &["delete", "pod", "bound", "--grace-period=0", "--force"],
        None,
    );
    assert!(ok, "{out}");
    let (found, out) = cp.run(&["get", "pod", "bound"], None);
    assert!(!found && out.contains("NotFound"), "{out}");

    // Nothing to stop: a pod never scheduled, and a finished one, go at once.
    cp.apply(&pod("pending", "  nodeSelector: {disk: none}\n"));
    cp.apply(&pod("done", "  nodeName: node-1\n"));
    let (ok, out) = cp.run(
        &[
            "patch",
            "pod",
            "done",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
    for name in ["pending", "done"] {
        let (ok, out) = cp.run(&["delete", "pod", name, "--wait=false"], None);
        assert!(ok, "{out}");
        let (found, out) = cp.run(&["get", "pod", name], None);
        assert!(!found && out.contains("NotFound"), "{name}: {out}");
    }

    // The pod GC removes a pod bound to a node that does not exist (after the
    // quarantine), and leaves pods on real nodes alone.
    cp.apply(&pod("stray", "  nodeName: ghost\n"));
    cp.apply(&pod("kept", "  nodeName: node-1\n"));
    cp.eventually(
        &["get", "pods", "-o", "name"],
        "the stray pod collected",
        |o| !o.contains("pod/stray") && o.contains("pod/kept"),
    );
}
