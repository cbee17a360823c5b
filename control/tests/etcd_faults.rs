//! skiff-control on a real 3-member etcd (Debian's etcd-server) while members die: with
//! quorum kept, no client gets a wrong answer (a 404 for an object that exists, a list
//! missing objects) and the controllers do not act on one; with quorum lost, every
//! request fails loudly (5xx Status, kubectl exits non-zero, /readyz fails) and all
//! recovers when the members return, without restarting skiff-control. Also etcd over
//! TLS with client certificates, and leader election across three skiff-controls.

mod common;
use common::etcd::{EtcdCluster, EtcdPki};
use serde_json::{json, Value};
use skiff_fixtures::process::Control;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain-HTTP request to the API server's loopback port: (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    common::http(&format!("127.0.0.1:{port}"), method, path, ct, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A 5xx answer that is a proper Status naming the store: an error, not a wrong answer.
fn is_store_error(code: u16, body: &str) -> bool {
    let v = json_of(body);
    (500..600).contains(&code) && v["kind"] == "Status" && v["code"] == code
}

fn control(etcd: &EtcdCluster, port: u16, extra: &[&str]) -> Control {
    let mut args = vec![
        "--etcd-servers".to_string(),
        etcd.endpoints.join(","),
        "--insecure-port".into(),
        port.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = etcd.dir.join(format!("control-{port}"));
    let c = Control::start(&dir, &args);
    // The insecure port is bound right after the secure one.
    let end = Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/livez", None).0 != 200 {
        assert!(Instant::now() < end, "no insecure port");
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// A node that renews its Lease every second through the API, as a kubelet does.
fn fake_node(port: u16, name: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                   "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"}}});
    let (code, body) = http(port, "POST", "/api/v1/nodes", Some(&node));
    assert_eq!(code, 201, "{body}");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}});
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let (code, body) = http(port, "POST", leases, Some(&lease));
    assert_eq!(code, 201, "{body}");
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut failed = 0;
        while !stop.load(Ordering::SeqCst) {
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
            let patch = json!({"spec": {"renewTime": now}});
            let (code, _) = http(port, "PATCH", &format!("{leases}/{name}"), Some(&patch));
            if code != 200 {
                failed += 1;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        failed
    })
}

/// Live (not terminating) pods of the web Deployment.
fn live_web_pods(port: u16) -> Option<Vec<Value>> {
    let (code, body) = http(
        port,
        "GET",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        None,
    );
    (code == 200).then(|| {
        json_of(&body)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    })
}

fn lease_of(port: u16, name: &str) -> Value {
    let (code, body) = http(
        port,
        "GET",
        &format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    json_of(&body)
}

fn deployment(replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
}

/// Twenty clients that write and read back their own ConfigMaps until stopped; returns
/// (wrong answers, store errors, successful rounds).
fn clients(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, usize, usize)> {
    std::thread::spawn(move || {
        let wrong = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let rounds = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..20)
            .map(|t| {
                let (wrong, errors, rounds, stop) =
                    (wrong.clone(), errors.clone(), rounds.clone(), stop.clone());
                std::thread::spawn(move || {
                    let cms = "/api/v1/namespaces/default/configmaps";
                    let mut made = 0usize;
                    let bad = |what: String| wrong.lock().unwrap().push(what);
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let name = format!("c{t}-{i}");
                        let want = i.to_string();
                        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "labels": {"client": t.to_string()}},
                            "data": {"i": i.to_string()}});
                        match http(port, "POST", cms, Some(&cm)) {
                            (201, _) => made += 1,
                            (c, b) if is_store_error(c, &b) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            (c, b) => {
                                bad(format!("create {name}: {c} {b}"));
                                continue;
                            }
                        }
                        match http(port, "GET", &format!("{cms}/{name}"), None) {
                            (200, b) if json_of(&b)["data"]["i"] == want.as_str() => {}
                            (c, b) if is_store_error(c, &b) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                            }
                            (c, b) => bad(format!("get {name} (exists): {c} {b}")),
                        }
                        let sel = format!("{cms}?labelSelector=client%3D{t}");
                        match http(port, "GET", &sel, None) {
                            (200, b) => {
                                let n = json_of(&b)["items"].as_array().map_or(0, Vec::len);
                                if n != made {
                                    bad(format!("list of client {t}: {n} items, {made} made"));
                                }
                            }
                            (c, b) if is_store_error(c, &b) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                            }
                            (c, b) => bad(format!("list of client {t}: {c} {b}")),
                        }
                        rounds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let w = wrong.lock().unwrap().clone();
        (
            w,
            errors.load(Ordering::SeqCst),
            rounds.load(Ordering::SeqCst),
        )
    })
}

#[test]
#[ignore = "needs etcd"]
fn losing_one_etcd_member_gives_no_wrong_answer() {
    let mut etcd = EtcdCluster::start("faults", 3).expect("etcd (apt-get install etcd-server)");
    let port = free_port();
    // A short grace period: a node lease read as missing would taint within seconds.
    let cp = control(&etcd, port, &["--node-monitor-grace-period", "6s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let node = fake_node(port, "n1", stop.clone());
    let (code, body) = http(
        port,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(&deployment(3)),
    );
    assert_eq!(code, 201, "{body}");
    let end = Instant::now() + Duration::from_secs(30);
    while live_web_pods(port).map_or(0, |p| p.len()) != 3 {
        assert!(Instant::now() < end, "3 pods");
        std::thread::sleep(Duration::from_millis(200));
    }
    let holder = lease_of(port, "skiff-controller-manager");
    let load = clients(port, stop.clone());
    // Scale up and down throughout; sample the pod count against what was asked.
    let desired = Arc::new(Mutex::new((3i64, 3i64))); // (now, before)
    let over = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (desired, over, stop) = (desired.clone(), over.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) {
                let (now, before) = *desired.lock().unwrap();
                if let Some(pods) = live_web_pods(port) {
                    samples += 1;
                    // Pods are never surged for a scale: at most the larger of the
                    // old and new replica counts.
                    if pods.len() as i64 > now.max(before) {
                        over.lock()
                            .unwrap()
                            .push(format!("{} pods, desired {now} (was {before})", pods.len()));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let scale = |n: i64| {
        let mut d = desired.lock().unwrap();
        *d = (n, d.0);
        drop(d);
        let patch = json!({"spec": {"replicas": n}});
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = http(
                port,
                "PATCH",
                "/apis/apps/v1/namespaces/default/deployments/web",
                Some(&patch),
            );
            if code == 200 {
                break;
            }
            assert!(is_store_error(code, &body), "scale: {code} {body}");
            assert!(Instant::now() < end, "scale to {n}: {code} {body}");
        }
    };
    let phase = |what: &str, secs: u64, sizes: &[i64]| {
        eprintln!("phase: {what}");
        for &n in sizes {
            scale(n);
            std::thread::sleep(Duration::from_secs(secs));
        }
    };
    phase("all members up", 2, &[5, 2]);
    let leader = etcd.leader().expect("a leader");
    eprintln!("kill -9 the leader, member {leader}");
    etcd.kill(leader);
    phase("leader dead", 3, &[6, 3, 4]);
    etcd.restart(leader);
    phase("leader back", 3, &[2, 5]);
    let follower = (0..3)
        .find(|&i| Some(i) != etcd.leader())
        .expect("a follower");
    eprintln!("kill -9 a follower, member {follower}");
    etcd.kill(follower);
    phase("follower dead", 3, &[7, 3]);
    etcd.restart(follower);
    phase("follower back", 3, &[4]);
    stop.store(true, Ordering::SeqCst);
    let (wrong, errors, rounds) = load.join().unwrap();
    let samples = sampler.join().unwrap();
    let renew_failures = node.join().unwrap();
    eprintln!(
        "client rounds {rounds}, store errors {errors}, wrong answers {}, pod samples {samples}, lease renewals failed {renew_failures}",
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong answers: {wrong:#?}");
    assert!(rounds > 1000, "the clients worked: {rounds} rounds");
    let over = over.lock().unwrap();
    assert!(over.is_empty(), "more pods than asked for: {over:#?}");
    // Converges on the last size.
    let end = Instant::now() + Duration::from_secs(30);
    while live_web_pods(port).map_or(0, |p| p.len()) != 4 {
        assert!(Instant::now() < end, "4 pods at the end");
        std::thread::sleep(Duration::from_millis(200));
    }
    // No lease flap, no healthy node tainted or marked NotReady.
    let after = lease_of(port, "skiff-controller-manager");
    assert_eq!(
        after["spec"]["holderIdentity"], holder["spec"]["holderIdentity"],
        "the controller manager's lease changed hands"
    );
    assert_eq!(
        after["spec"]["leaseTransitions"],
        holder["spec"]["leaseTransitions"]
    );
    let (_, n) = http(port, "GET", "/api/v1/nodes/n1", None);
    let n = json_of(&n);
    assert!(n["spec"]["taints"].is_null(), "node tainted: {}", n["spec"]);
    let ready = n["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
    assert_eq!(ready.unwrap()["status"], "True", "{n}");
    assert!(
        cp.log_lines("reconcile failed").len() < 50,
        "{:#?}",
        cp.log_lines("reconcile failed")
    );
}

fn kubectl(kc: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--request-timeout",
        "60s",
    ];
    all.extend_from_slice(args);
    skiff_fixtures::process::kubectl(&all, None)
}

#[test]
#[ignore = "needs etcd"]
fn losing_etcd_quorum_fails_loudly_and_recovers() {
    let mut etcd = EtcdCluster::start("quorum", 3).expect("etcd (apt-get install etcd-server)");
    let port = free_port();
    let cp = control(&etcd, port, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let o = kubectl(&kc, &["create", "configmap", "before"]);
    assert!(o.status.success(), "{o:?}");
    // An open watch, as a user leaves `kubectl get -w` running.
    let mut watch = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "get",
            "configmaps",
            "-w",
            "-o",
            "name",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let leader = etcd.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Quorum gone: the leader and one follower.
    etcd.kill(leader);
    etcd.kill(others[0]);
    let t0 = Instant::now();
    let (code, body) = http(port, "GET", "/api/v1/namespaces/default/configmaps", None);
    let took = t0.elapsed();
    eprintln!("list with quorum lost: {code} after {took:?}: {body}");
    assert!(is_store_error(code, &body), "{code} {body}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(
        json_of(&body)["message"]
            .as_str()
            .unwrap_or("")
            .contains("store"),
        "{body}"
    );
    let (code, body) = http(
        port,
        "GET",
        "/api/v1/namespaces/default/configmaps/before",
        None,
    );
    assert!(
        is_store_error(code, &body),
        "get of an existing object: {code} {body}"
    );
    let o = kubectl(&kc, &["get", "configmaps"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "kubectl get succeeded: {o:?}");
    assert!(!err.contains("No resources found"), "{err}");
    let o = kubectl(&kc, &["create", "configmap", "during"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        !err.contains("not found"),
        "a store failure told as absence: {err}"
    );
    let (code, body) = http(port, "GET", "/readyz", None);
    assert_eq!(code, 500, "/readyz with quorum lost: {body}");
    assert!(body.contains("etcd"), "{body}");
    assert_eq!(http(port, "GET", "/livez", None).0, 200);
    // The watch must not have ended as if all were well.
    if let Some(st) = watch.try_wait().unwrap() {
        let out = watch.wait_with_output().unwrap();
        assert!(!st.success(), "kubectl get -w ended silently: {out:?}");
        panic!("{out:?}");
    }
    // Members back: everything recovers in the same skiff-control.
    etcd.restart(leader);
    etcd.restart(others[0]);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = http(port, "GET", "/readyz", None);
        let o = kubectl(&kc, &["get", "configmap", "before", "-o", "name"]);
        if code == 200 && o.status.success() {
            break;
        }
        assert!(Instant::now() < end, "no recovery: readyz {code}, {o:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = kubectl(&kc, &["create", "configmap", "after"]);
    assert!(o.status.success(), "{o:?}");
    // The watch either carried on (it shows the new object) or ended with an error.
    let end = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = watch.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("watch: {status:?}\n{stdout}\n{stderr}");
    match status {
        Some(st) => assert!(
            !st.success() && !stderr.is_empty(),
            "the watch ended silently"
        ),
        None => assert!(
            stdout.contains("configmap/after"),
            "the watch went quiet: {stdout}"
        ),
    }
}

#[test]
#[ignore = "needs etcd"]
fn etcd_over_tls_with_client_certificates() {
    // The cluster PKI makes a CA, a serving pair for 127.0.0.1 and a client pair.
    let base = std::env::temp_dir().join(format!("skiff-etcd-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let pki = skiff_control::pki::Pki::ensure(&base, &["127.0.0.1".into()]).unwrap();
    let files = EtcdPki {
        ca: pki.dir.join("ca.crt"),
        server_cert: pki.dir.join("apiserver.crt"),
        server_key: pki.dir.join("apiserver.key"),
        client_cert: pki.dir.join("admin.crt"),
        client_key: pki.dir.join("admin.key"),
    };
    let etcd = EtcdCluster::start_tls("tls", &files).expect("etcd (apt-get install etcd-server)");
    assert!(etcd.endpoints[0].starts_with("https://"));
    // Without a client certificate etcd refuses the client.
    let no_cert = skiff_control::store::EtcdTls {
        ca: Some(files.ca.clone()),
        cert: None,
        key: None,
    };
    let refused = skiff_control::store::Store::etcd(&etcd.endpoints, Some(&no_cert));
    assert!(refused.is_err(), "etcd took a client without a certificate");
    // skiff-control with the flags serves kubectl from it.
    let port = free_port();
    let args = [
        "--etcd-cafile",
        files.ca.to_str().unwrap(),
        "--etcd-certfile",
        files.client_cert.to_str().unwrap(),
        "--etcd-keyfile",
        files.client_key.to_str().unwrap(),
    ];
    let cp = control(&etcd, port, &args);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let o = kubectl(
        &kc,
        &["create", "configmap", "over-tls", "--from-literal=k=v"],
    );
    assert!(o.status.success(), "{o:?}");
    let o = kubectl(
        &kc,
        &["get", "configmap", "over-tls", "-o", "jsonpath={.data.k}"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "v", "{o:?}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
#[ignore = "needs etcd"]
fn a_dead_lease_holder_is_replaced_within_the_lease() {
    let etcd = EtcdCluster::start("ha", 3).expect("etcd (apt-get install etcd-server)");
    let ports = [free_port(), free_port(), free_port()];
    let mut cps: Vec<Control> = ports.iter().map(|&p| control(&etcd, p, &[])).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let node = fake_node(ports[0], "n1", stop.clone());
    let (code, body) = http(
        ports[0],
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(&deployment(3)),
    );
    assert_eq!(code, 201, "{body}");
    let bound = |port: u16, n: usize| -> bool {
        live_web_pods(port)
            .is_some_and(|p| p.len() == n && p.iter().all(|p| p["spec"]["nodeName"] == "n1"))
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !bound(ports[0], 3) {
        assert!(Instant::now() < end, "3 bound pods");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Which process holds the leases: the one that logged taking them.
    let lease = lease_of(ports[0], "skiff-controller-manager");
    let id = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let holder = cps
        .iter()
        .position(|c| c.log_lines("acquired").iter().any(|l| l.contains(&id)))
        .expect("the holder logged its lease");
    eprintln!("kill -9 the lease holder, skiff-control {holder} ({id})");
    cps[holder].kill();
    let t0 = Instant::now();
    let alive = ports[(holder + 1) % 3];
    let (code, body) = http(
        alive,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        Some(&json!({"spec": {"replicas": 6}})),
    );
    assert_eq!(code, 200, "{body}");
    // The lease is 15 s; renewal every 5 s: another instance acts within about that.
    let mut most = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while !bound(alive, 6) {
        most = most.max(live_web_pods(alive).map_or(0, |p| p.len()));
        assert!(most <= 6, "{most} pods for 6 replicas");
        assert!(Instant::now() < end, "6 bound pods after the takeover");
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t0.elapsed();
    let after = lease_of(alive, "skiff-controller-manager");
    assert_ne!(after["spec"]["holderIdentity"], id);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        live_web_pods(alive).map(|p| p.len()),
        Some(6),
        "no duplicate pods"
    );
    eprintln!("pending pods bound by the new leader {took:?} after the kill");
    assert!(took < Duration::from_secs(25), "{took:?}");
    stop.store(true, Ordering::SeqCst);
    node.join().unwrap();
}

#[test]
#[ignore = "needs etcd"]
fn controllers_whose_writes_fail_retry_and_converge() {
    let mut etcd = EtcdCluster::start("retry", 3).expect("etcd (apt-get install etcd-server)");
    // A serves the API; B runs the controllers and the scheduler.
    let (pa, pb) = (free_port(), free_port());
    let _a = control(&etcd, pa, &["--controllers=false", "--scheduler=false"]);
    let b = control(&etcd, pb, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let node = fake_node(pa, "n1", stop.clone());
    let (code, body) = http(
        pa,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(&deployment(2)),
    );
    assert_eq!(code, 201, "{body}");
    let count = || live_web_pods(pa).map_or(0, |p| p.len());
    let end = Instant::now() + Duration::from_secs(30);
    while count() != 2 {
        assert!(Instant::now() < end, "2 pods");
        std::thread::sleep(Duration::from_millis(200));
    }
    // B is held still while the deployment is scaled; its watches hold the news when
    // it goes on, and by then the store has lost quorum: its reads and writes fail.
    let signal = |sig| unsafe { libc::kill(b.pid() as i32, sig) };
    signal(libc::SIGSTOP);
    let (code, body) = http(
        pa,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        Some(&json!({"spec": {"replicas": 8}})),
    );
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let leader = etcd.leader().expect("a leader");
    let other = (0..3).find(|&i| i != leader).unwrap();
    etcd.kill(leader);
    etcd.kill(other);
    signal(libc::SIGCONT);
    let end = Instant::now() + Duration::from_secs(40);
    while b.log_lines("reconcile failed").is_empty() {
        assert!(Instant::now() < end, "B's controllers never failed a pass");
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = b.log_lines("reconcile failed");
    eprintln!("{}", failed[0]);
    etcd.restart(leader);
    etcd.restart(other);
    // Back: the controllers retry what failed and reach 8, never more.
    let end = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    loop {
        let n = count();
        most = most.max(n);
        assert!(most <= 8, "{most} pods for 8 replicas");
        if n == 8 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{n} pods of 8 after the store came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(), 8);
    stop.store(true, Ordering::SeqCst);
    node.join().unwrap();
}

/// The seed's etcd: three members whose clients and peers all speak TLS with client
/// certificates, each with certificates the cluster CA issued (`skiff-control
/// etcd-certs`, kubeadm's etcd phase), and two skiff-control sharing that CA serving one
/// cluster from it; a member killed, the cluster still answers through either server.
#[test]
#[ignore = "needs etcd and kubectl"]
fn a_tls_etcd_cluster_from_the_cluster_ca_serves_two_api_servers() {
    let base = std::env::temp_dir().join(format!("skiff-etcd-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let first = base.join("cp1");
    let members: Vec<std::path::PathBuf> =
        (0..3).map(|i| base.join(format!("etcd-m{i}"))).collect();
    for (i, d) in members.iter().enumerate() {
        let o = std::process::Command::new(skiff_fixtures::process::binary())
            .arg("--data-dir")
            .arg(&first)
            .args([
                "etcd-certs",
                "--name",
                &format!("m{i}"),
                "--san",
                "127.0.0.1",
                "--out",
            ])
            .arg(d)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    // Every file from the one cluster CA.
    let ca = std::fs::read_to_string(first.join("pki/ca.crt")).unwrap();
    assert_eq!(
        std::fs::read_to_string(members[2].join("ca.crt")).unwrap(),
        ca
    );
    let mut etcd =
        EtcdCluster::start_secure("ca3", &members).expect("etcd (apt-get install etcd-server)");
    assert!(etcd.endpoints.iter().all(|e| e.starts_with("https://")));
    // A second master gets the CA before it starts.
    let second = base.join("cp2");
    std::fs::create_dir_all(second.join("pki")).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(first.join("pki").join(f), second.join("pki").join(f)).unwrap();
    }
    let m0 = &members[0];
    let flags = [
        "--etcd-servers".to_string(),
        etcd.endpoints.join(","),
        "--etcd-cafile".into(),
        m0.join("ca.crt").display().to_string(),
        "--etcd-certfile".into(),
        m0.join("apiserver-etcd-client.crt").display().to_string(),
        "--etcd-keyfile".into(),
        m0.join("apiserver-etcd-client.key").display().to_string(),
        "--leader-elect".into(),
        "true".into(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cps = [
        Control::start(&first, &flags),
        Control::start(&second, &flags),
    ];
    let kcs = [
        cps[0].kubeconfig("admin.kubeconfig"),
        cps[1].kubeconfig("admin.kubeconfig"),
    ];
    let o = kubectl(
        &kcs[0],
        &["create", "configmap", "one", "--from-literal=k=1"],
    );
    assert!(o.status.success(), "{o:?}");
    let o = kubectl(
        &kcs[1],
        &["get", "configmap", "one", "-o", "jsonpath={.data.k}"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1", "{o:?}");
    etcd.kill(0);
    let o = kubectl(
        &kcs[1],
        &["create", "configmap", "two", "--from-literal=k=2"],
    );
    assert!(o.status.success(), "with a member down: {o:?}");
    let o = kubectl(
        &kcs[0],
        &["get", "configmap", "two", "-o", "jsonpath={.data.k}"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2", "{o:?}");
    // The members talk to each other over TLS with client certificates.
    let log = std::fs::read_to_string(etcd.dir.join("m1.log")).unwrap();
    assert!(
        log.contains("peerTLS: cert =")
            && log.contains("peer.crt")
            && log.contains("client-cert-auth = true"),
        "{log}"
    );
    drop(cps);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&base);
}
