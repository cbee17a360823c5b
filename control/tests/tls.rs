//! The API server over HTTPS with the cluster CA made on first start, client-certificate
//! authentication and `skiff-control kubeconfig`, driven by the real kubectl.

mod common;
use skiff_fixtures::process::{kubectl, Control};
use std::path::PathBuf;
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skiff-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n";

#[test]
#[ignore = "needs kubectl"]
fn https_with_client_certificates() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("needs kubectl");
    }
    let dir = tmp("a");
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap();
    let o = kubectl(&["--kubeconfig", kcs, "apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(o.status.success(), "{o:?}");
    let o = kubectl(
        &[
            "--kubeconfig",
            kcs,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2", "{o:?}");
    // The controller manager and scheduler hold their Leases (leader election).
    let mut leases = String::new();
    for _ in 0..50 {
        let o = kubectl(
            &[
                "--kubeconfig",
                kcs,
                "-n",
                "kube-system",
                "get",
                "leases",
                "-o",
                "name",
            ],
            None,
        );
        leases = String::from_utf8_lossy(&o.stdout).to_string();
        if leases.contains("skiff-controller-manager") && leases.contains("skiff-scheduler") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        leases.contains("lease.coordination.k8s.io/skiff-scheduler"),
        "{leases}"
    );
    let ca = dir.join("pki/ca.crt");
    for f in ["ca.key", "apiserver.key", "admin.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("pki").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // No client certificate: 401, except the health and version endpoints.
    let server = format!("https://127.0.0.1:{}", cp.port);
    let o = kubectl(
        &[
            "--server",
            &server,
            "--certificate-authority",
            ca.to_str().unwrap(),
            "get",
            "pods",
        ],
        None,
    );
    assert!(!o.status.success());
    // (kubectl answers a 401 by asking for a username; with no terminal that ends it.)
    let o = Command::new("curl")
        .args([
            "-s",
            "-w",
            " %{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
            &format!("{server}/api/v1/pods"),
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.ends_with(" 401") && body.contains("\"reason\":\"Unauthorized\""),
        "{body}"
    );
    let o = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            ca.to_str().unwrap(),
            &format!("{server}/healthz"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok");
    // The server's certificate is for the names clients use: curl verifies it without -k.
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
            &format!("https://localhost:{}/version", cp.port),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{o:?}");

    // A certificate from another cluster's CA is refused.
    let other_dir = tmp("b");
    let other = Control::start(&other_dir, &[]);
    let foreign = other.kubeconfig("foreign.kubeconfig");
    let text = std::fs::read_to_string(&foreign)
        .unwrap()
        .replace(&format!(":{}", other.port), &format!(":{}", cp.port));
    // Trust our server, but present the other cluster's admin certificate.
    let ours = std::fs::read_to_string(&kc).unwrap();
    let ca_line = |t: &str| {
        t.lines()
            .find(|l| l.contains("certificate-authority-data"))
            .unwrap()
            .to_string()
    };
    let text = text.replace(&ca_line(&text), &ca_line(&ours));
    std::fs::write(&foreign, text).unwrap();
    let o = kubectl(
        &["--kubeconfig", foreign.to_str().unwrap(), "get", "pods"],
        None,
    );
    assert!(!o.status.success(), "{o:?}");
    drop(other);

    // A restart keeps the CA: the old kubeconfig still works and the data is there.
    let ca_before = std::fs::read_to_string(&ca).unwrap();
    drop(cp);
    let cp = Control::start(&dir, &[]);
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_before);
    let kc = cp.kubeconfig("admin2.kubeconfig");
    let o = kubectl(
        &[
            "--kubeconfig",
            kc.to_str().unwrap(),
            "get",
            "deployment",
            "web",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "deployment.apps/web",
        "{o:?}"
    );
    drop(cp);

    // Plain HTTP only on loopback.
    let o = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--bind-address",
            "0.0.0.0",
            "--insecure-port",
            "1",
            "--secure-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("loopback"),
        "{o:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// The compactor drops old history: a watch from a resourceVersion older than one
/// interval gets 410 Gone (Expired), as with kube-apiserver on etcd.
#[test]
#[ignore = "needs kubectl"]
fn compaction_expires_old_resource_versions() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("needs kubectl");
    }
    let dir = tmp("compact");
    let cp = Control::start(&dir, &["--etcd-compaction-interval", "1s"]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap();
    let o = kubectl(
        &["--kubeconfig", kcs, "apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {v: \"0\"}\n"),
    );
    assert!(o.status.success(), "{o:?}");
    let o = kubectl(
        &[
            "--kubeconfig",
            kcs,
            "get",
            "configmap",
            "c",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
        None,
    );
    let old = String::from_utf8_lossy(&o.stdout).to_string();
    // A watch from it works now...
    let watch = |rv: &str| {
        kubectl(&["--kubeconfig", kcs, "get", "--raw", &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1")], None)
    };
    assert!(watch(&old).status.success());
    for i in 1..4 {
        let o = kubectl(
            &[
                "--kubeconfig",
                kcs,
                "patch",
                "configmap",
                "c",
                "-p",
                &format!("{{\"data\":{{\"v\":\"{i}\"}}}}"),
            ],
            None,
        );
        assert!(o.status.success(), "{o:?}");
    }
    // ...and after two intervals it is gone: as kube-apiserver answers, 200 and one
    // ERROR event carrying a 410 Expired Status (clients relist on it).
    std::thread::sleep(std::time::Duration::from_millis(2600));
    let o = watch(&old);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["type"], "ERROR", "{out}");
    let st = &events[0]["object"];
    assert_eq!(
        (
            st["kind"].as_str(),
            st["code"].as_i64(),
            st["reason"].as_str()
        ),
        (Some("Status"), Some(410), Some("Expired")),
        "{out}"
    );
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old} (")),
        "{out}"
    );

    // An idle watch's bookmark carries the store's revision, not the last one of its own
    // kind: resuming from it is safe from compaction while other kinds change.
    let now = String::from_utf8_lossy(
        &kubectl(
            &[
                "--kubeconfig",
                kcs,
                "get",
                "configmap",
                "c",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
            None,
        )
        .stdout,
    )
    .to_string();
    let url = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={now}&allowWatchBookmarks=true&timeoutSeconds=7");
    let kcs2 = kcs.to_string();
    let w =
        std::thread::spawn(move || kubectl(&["--kubeconfig", &kcs2, "get", "--raw", &url], None));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let o = kubectl(
        &[
            "--kubeconfig",
            kcs,
            "create",
            "secret",
            "generic",
            "other",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let other: i64 = String::from_utf8_lossy(&o.stdout).parse().unwrap();
    let o = w.join().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let bookmark = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "BOOKMARK")
        .unwrap_or_else(|| panic!("no bookmark: {out}"));
    let rv: i64 = bookmark["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rv >= other,
        "bookmark at {rv}, the store is at {other} or later: {out}"
    );
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubectl logs` goes through the API server to the pod's node's kubelet, which sees
/// the API server's client certificate (a stand-in kubelet on loopback, cluster-CA cert).
#[test]
#[ignore = "needs kubectl"]
fn pod_logs_are_proxied_to_the_kubelet() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("needs kubectl");
    }
    let dir = tmp("logs");
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap();
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let user = req
            .extensions()
            .get::<skiff_control::apiserver::tls::User>()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        format!("line from {} as {user}\n", req.uri())
    });
    stand_in_kubelet(&dir, kcs, app);
    let lonely = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: q\nspec:\n  containers:\n  - {name: c, image: busybox}\n";
    let o = kubectl(&["--kubeconfig", kcs, "apply", "-f", "-"], Some(lonely));
    assert!(o.status.success(), "{o:?}");
    let o = kubectl(&["--kubeconfig", kcs, "logs", "p", "--tail=5"], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        text.contains("/containerLogs/default/p/c?") && text.contains("tailLines=5"),
        "{text}"
    );
    assert!(text.contains("as kube-apiserver-kubelet-client"), "{text}");
    let o = kubectl(&["--kubeconfig", kcs, "logs", "q"], None);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not have a host assigned"),
        "{o:?}"
    );
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubectl exec` (WebSocket, v5.channel.k8s.io) through the API server to the kubelet:
/// the upgrade is passed on and the stream spliced both ways.
#[test]
#[ignore = "needs kubectl"]
fn pod_exec_is_proxied_to_the_kubelet() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("needs kubectl");
    }
    let dir = tmp("exec");
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let kcs = kc.to_str().unwrap();
    // A stand-in kubelet exec: answers the WebSocket upgrade, prints the command.
    let app = axum::Router::new().fallback(|mut req: axum::extract::Request| async move {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::{
            handshake::derive_accept_key, protocol::Role, Message,
        };
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default();
        let cmd: Vec<String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix("command="))
            .map(str::to_string)
            .collect();
        let path = req.uri().path().to_string();
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(up.await.unwrap());
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let mut out = vec![1u8];
            out.extend_from_slice(format!("{path} ran {}\n", cmd.join(" ")).as_bytes());
            ws.send(Message::binary(out)).await.unwrap();
            let mut st = vec![3u8];
            st.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
            ws.send(Message::binary(st)).await.unwrap();
            // A normal close (1000): kubectl treats a bare close as an error.
            let _ = ws
                .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code:
                        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                    reason: "".into(),
                }))
                .await;
        });
        axum::response::Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", derive_accept_key(&key))
            .header("sec-websocket-protocol", "v5.channel.k8s.io")
            .body(axum::body::Body::empty())
            .unwrap()
    });
    stand_in_kubelet(&dir, kcs, app);
    let o = kubectl(
        &["--kubeconfig", kcs, "exec", "p", "--", "echo", "hi"],
        None,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(text, "/exec/default/p/c ran echo hi\n");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stand-in kubelet on loopback serving `app` over HTTPS with a certificate of the
/// cluster CA (client certificates checked, as a kubelet does), and a Node n1 that points
/// at it with a pod p (container c) bound to it.
fn stand_in_kubelet(dir: &std::path::Path, kcs: &str, app: axum::Router) {
    let pki = skiff_control::pki::Pki::ensure(&dir.join("pki"), &[]).unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            port_tx.send(l.local_addr().unwrap().port()).unwrap();
            let cfg = skiff_control::apiserver::tls::server_config(&pki).unwrap();
            skiff_control::apiserver::tls::serve(l, app, cfg).await;
        });
    });
    let port = port_rx.recv().unwrap();
    let node = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses: [{{type: InternalIP, address: 127.0.0.1}}]\n  daemonEndpoints:\n    kubeletEndpoint: {{Port: {port}}}\n");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: n1\n  containers:\n  - {name: c, image: busybox}\n";
    for m in [node.as_str(), pod] {
        let o = kubectl(&["--kubeconfig", kcs, "apply", "-f", "-"], Some(m));
        assert!(o.status.success(), "{o:?}");
    }
}
