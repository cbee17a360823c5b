//! The store on real etcd (Debian's etcd-server), a 3-member cluster on loopback that
//! the test starts: the store's semantics (preconditions, revisions, watch from a
//! revision, compaction), and two API servers on one etcd serving one cluster to kubectl.

mod common;
use common::etcd::EtcdCluster;
use skiff_control::store::{EventKind, Precondition, Store, StoreError};
use skiff_fixtures::process::Control;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs etcd"]
fn store_semantics_on_etcd() {
    let etcd = EtcdCluster::start("store", 3).expect("needs etcd (apt-get install etcd-server)");
    let s = Store::etcd(&etcd.endpoints, None).unwrap();
    let a = s
        .put("/registry/t/a", b"1".to_vec(), Precondition::Absent)
        .unwrap();
    assert_eq!((a.version, a.create_revision), (1, a.mod_revision));
    assert_eq!(
        s.put("/registry/t/a", b"x".to_vec(), Precondition::Absent),
        Err(StoreError::AlreadyExists("/registry/t/a".into()))
    );
    let b = s
        .put(
            "/registry/t/a",
            b"2".to_vec(),
            Precondition::Revision(a.mod_revision),
        )
        .unwrap();
    assert_eq!((b.version, b.create_revision), (2, a.create_revision));
    assert!(matches!(
        s.put(
            "/registry/t/a",
            b"3".to_vec(),
            Precondition::Revision(a.mod_revision)
        ),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.put(
            "/registry/t/missing",
            b"3".to_vec(),
            Precondition::Revision(5)
        ),
        Err(StoreError::NotFound("/registry/t/missing".into()))
    );
    s.put("/registry/t/b", b"b".to_vec(), Precondition::None)
        .unwrap();
    s.put("/registry/u/c", b"c".to_vec(), Precondition::None)
        .unwrap();
    let (items, rev) = s.list("/registry/t/").unwrap();
    assert_eq!(
        items.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/registry/t/a", "/registry/t/b"]
    );
    assert_eq!(rev, s.revision().unwrap());
    // Watch from a revision replays what came after it, then goes live.
    let w = s.watch("/registry/t/", a.mod_revision).unwrap();
    let del = s.delete("/registry/t/b", Precondition::None).unwrap();
    assert_eq!(del.value[..], b"b"[..]);
    assert_eq!(
        s.delete("/registry/t/b", Precondition::None),
        Err(StoreError::NotFound("/registry/t/b".into()))
    );
    let got: Vec<(EventKind, String, i64)> = (0..3)
        .map(|_| w.recv_timeout(Duration::from_secs(5)).unwrap().unwrap())
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        got[0],
        (EventKind::Put, "/registry/t/a".into(), b.mod_revision)
    );
    assert_eq!(got[1].1, "/registry/t/b");
    assert_eq!(got[2].0, EventKind::Delete);
    // Compaction: older revisions are gone for watches (the API answers 410).
    s.compact(s.revision().unwrap()).unwrap();
    let old = s.watch("/registry/t/", a.mod_revision).unwrap();
    assert!(matches!(
        old.recv_timeout(Duration::from_secs(10)),
        Err(StoreError::Compacted { .. })
    ));
    // A dropped watch is cancelled in etcd at once, not at its next event.
    drop(w);
    let settle = |want: &dyn Fn(u64) -> bool, what: &str| {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = watchers(&etcd.endpoints);
            if want(n) {
                return n;
            }
            assert!(std::time::Instant::now() < end, "{what}: {n} watchers");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The count once the dropped watch's cancellation has landed (it was counted in a
    // base taken too early, and five new ones then never reached base + 5).
    let mut base = watchers(&etcd.endpoints);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(300));
        let now = watchers(&etcd.endpoints);
        if now == base {
            break;
        }
        base = now;
    }
    let ws: Vec<_> = (0..5)
        .map(|_| s.watch("/registry/quiet/", 0).unwrap())
        .collect();
    settle(&|n| n >= base + 5, "five watches open");
    drop(ws);
    settle(&|n| n <= base, "watches cancelled after drop");
}

/// etcd's count of open watchers, summed over the members (its /metrics).
fn watchers(endpoints: &[String]) -> u64 {
    use std::io::{Read, Write};
    endpoints
        .iter()
        .map(|e| {
            let addr = e.trim_start_matches("http://");
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            write!(c, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
            let mut text = String::new();
            c.read_to_string(&mut text).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("etcd_debugging_mvcc_watcher_total in /metrics") as u64
        })
        .sum()
}

fn control(dir: &Path, etcd: &[String]) -> Control {
    Control::start(dir, &["--etcd-servers", &etcd.join(",")])
}

/// kubectl with a kubeconfig: (success, stdout then stderr).
fn kubectl(kc: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut all = vec!["--kubeconfig", kc.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = skiff_fixtures::process::kubectl(&all, stdin);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
#[ignore = "needs kubectl, etcd"]
fn two_api_servers_on_one_etcd_serve_one_cluster() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("needs kubectl");
    }
    let etcd = EtcdCluster::start("api", 3).expect("needs etcd (apt-get install etcd-server)");
    // One data dir: the API servers share the cluster PKI; the state is in etcd.
    let dir = etcd.dir.join("control");
    let a = control(&dir, &etcd.endpoints);
    let b = control(&dir, &etcd.endpoints);
    let (ka, kb) = (a.kubeconfig("a.kubeconfig"), b.kubeconfig("b.kubeconfig"));
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: web, image: nginx}\n";
    let (ok, out) = kubectl(&ka, &["apply", "-f", "-"], Some(deploy));
    assert!(ok, "{out}");
    // Seen through the other server; one controller manager (the Lease holder) made
    // exactly 3 pods, not 3 per server.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, pods) = kubectl(&kb, &["get", "pods", "-l", "app=web", "-o", "name"], None);
        let (_, d) = kubectl(
            &kb,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        );
        if d == "3" && pods.lines().count() == 3 {
            std::thread::sleep(Duration::from_millis(1500));
            let (_, again) = kubectl(&ka, &["get", "pods", "-l", "app=web", "-o", "name"], None);
            assert_eq!(again.lines().count(), 3, "{again}");
            break;
        }
        assert!(Instant::now() < end, "pods via b: {pods}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, leases) = kubectl(
        &ka,
        &[
            "-n",
            "kube-system",
            "get",
            "lease",
            "skiff-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert!(!leases.is_empty());
    // A write on b is immediately readable on a (one store).
    let (ok, out) = kubectl(
        &kb,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata: {k: v}\n"),
    );
    assert!(ok, "{out}");
    let (_, v) = kubectl(
        &ka,
        &["get", "configmap", "shared", "-o", "jsonpath={.data.k}"],
        None,
    );
    assert_eq!(v, "v");
    // Both gone, one back: everything is still there.
    drop((a, b));
    let c = control(&dir, &etcd.endpoints);
    let kc = c.kubeconfig("c.kubeconfig");
    let (_, v) = kubectl(
        &kc,
        &["get", "configmap", "shared", "-o", "jsonpath={.data.k}"],
        None,
    );
    assert_eq!(v, "v");
    drop(c);
}

#[test]
#[ignore = "needs etcd"]
fn start_with_etcd_unreachable_waits_and_retries() {
    use std::io::BufRead;
    let etcd = EtcdCluster::start("late", 1).expect("etcd (apt-get install etcd-server)");
    etcd.freeze(0, true);
    let dir = etcd.dir.join("control");
    let mut child = Command::new(skiff_fixtures::process::binary())
        .arg("--data-dir")
        .arg(&dir)
        .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
        .args(["--etcd-servers", &etcd.endpoints.join(",")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let wait_line = |what: &str, secs| -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        while let Ok(l) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            if l.contains(what) {
                return l;
            }
        }
        panic!("no line with {what:?} in {secs}s");
    };
    let why = wait_line("etcd is not reachable yet", 20);
    assert!(why.contains("retrying"), "{why}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "skiff-control gave up");
    // etcd comes back: the same process serves, no restart.
    etcd.freeze(0, false);
    wait_line("serving the Kubernetes API", 40);
    assert!(child.try_wait().unwrap().is_none());
    let _ = child.kill();
    let _ = child.wait();
}
