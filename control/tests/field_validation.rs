//! fieldValidation as kube-apiserver applies it (kubectl --validate): Strict refuses a
//! field the kind does not declare, Warn stores the object without it and warns, Ignore
//! drops it silently — with the oldest and newest kubectl installed. And the size limits:
//! 1 MiB of ConfigMap data, 3 MiB of request.

mod common;
use skiff_fixtures::process::{kubectl_as, kubectl_range, Control};

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: NAME\nspec:\n  replicas: 1\n  foo: 1\n  selector:\n    matchLabels: {app: NAME}\n  template:\n    metadata:\n      labels: {app: NAME}\n    spec:\n      containers:\n      - {name: c, image: nginx, bogus: yes}\n";

#[test]
#[ignore = "needs kubectl"]
fn unknown_fields_by_field_validation() {
    for (i, k) in kubectl_range().iter().enumerate() {
        let dir = std::env::temp_dir().join(format!("skiff-fieldval-{i}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cp = Control::start(&dir, &[]);
        let kc = cp.kubeconfig("admin.kubeconfig");
        let run = |args: &[&str], stdin: Option<&str>| {
            let (code, out, err) = kubectl_as(k, &kc, args, stdin);
            (code == 0, out, err)
        };
        // Strict: refused, nothing stored.
        let (ok, out, err) = run(
            &["apply", "--validate=strict", "-f", "-"],
            Some(&DEPLOYMENT.replace("NAME", "strict")),
        );
        assert!(!ok, "{k}: strict accepted an unknown field: {out}");
        assert!(err.contains("unknown field \"spec.foo\""), "{k}: {err}");
        let (ok, _, _) = run(&["get", "deployment", "strict"], None);
        assert!(!ok, "{k}: stored despite Strict");
        // Warn: stored without the fields, with a warning for each.
        let (ok, _, err) = run(
            &["apply", "--validate=warn", "-f", "-"],
            Some(&DEPLOYMENT.replace("NAME", "warn")),
        );
        assert!(ok, "{k}: {err}");
        assert!(
            err.contains("Warning: unknown field \"spec.foo\""),
            "{k}: {err}"
        );
        assert!(
            err.contains("unknown field \"spec.template.spec.containers[0].bogus\""),
            "{k}: {err}"
        );
        let (_, json, _) = run(&["get", "deployment", "warn", "-o", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["spec"]["foo"].is_null(), "{k}: {json}");
        assert!(v["spec"]["template"]["spec"]["containers"][0]["bogus"].is_null());
        // Ignore: stored without them, silently.
        let (ok, _, err) = run(
            &["apply", "--validate=false", "-f", "-"],
            Some(&DEPLOYMENT.replace("NAME", "ignore")),
        );
        assert!(ok, "{k}: {err}");
        assert!(!err.contains("unknown field"), "{k}: {err}");
        // A patch that adds one: refused (kubectl sends Strict) or warned about and dropped.
        let (ok, _, err) = run(
            &[
                "patch",
                "deployment",
                "warn",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"bar":2}}"#,
            ],
            None,
        );
        assert!(err.contains("unknown field \"spec.bar\""), "{k}: {err}");
        let (_, json, _) = run(&["get", "deployment", "warn", "-o", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["spec"]["bar"].is_null(), "{k} (patch ok: {ok}): {json}");
        // Every served kind is checked, not only some: a Secret and a Lease too.
        for doc in [
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\nextra: 1\n",
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l}\nspec: {holderIdentity: x, wrong: 2}\n",
        ] {
            let (ok, _, err) = run(&["apply", "--validate=strict", "-f", "-"], Some(doc));
            assert!(!ok && err.contains("unknown field"), "{k}: {doc}: {err}");
        }
        drop(cp);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
#[ignore = "needs kubectl"]
fn configmap_and_request_size_limits() {
    let dir = std::env::temp_dir().join(format!("skiff-sizes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cp = Control::start(&dir.join("cp"), &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let make = |name: &str, bytes: usize| {
        let p = dir.join(name);
        std::fs::write(&p, "x".repeat(bytes)).unwrap();
        p
    };
    let create = |name: &str, file: &std::path::Path| {
        let o = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["create", "configmap", name])
            .arg(format!("--from-file=v={}", file.display()))
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, err) = create("fits", &make("fits", 900 << 10));
    assert!(ok, "{err}");
    // Over 1 MiB of data: invalid, as Kubernetes validates it.
    let (ok, err) = create("big", &make("big", 3 << 19));
    assert!(!ok);
    assert!(
        err.contains("Too long: must have at most 1048576 bytes"),
        "{err}"
    );
    // Over the request size limit: refused before it is read.
    let (ok, err) = create("huge", &make("huge", 8 << 20));
    assert!(!ok);
    assert!(err.to_lowercase().contains("too large"), "{err}");
    let o = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "configmaps", "-o", "name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&o.stdout);
    assert!(names.contains("configmap/fits"), "{names}");
    assert!(!names.contains("big") && !names.contains("huge"), "{names}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Error Status objects carry `details` naming the object (name, group, kind) and, for
/// Invalid, the failed fields — what kubectl debug and client-go read.
#[test]
fn error_statuses_name_their_object() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("skiff-details-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _cp = Control::start(&dir, &["--insecure-port", &port.to_string()]);
    let call = |method: &str, path: &str, body: &str| -> serde_json::Value {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut c = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > end => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        write!(c, "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap()
    };
    let pod = call("GET", "/api/v1/namespaces/default/pods/missing", "");
    assert_eq!(pod["code"], 404);
    assert_eq!(
        pod["details"],
        serde_json::json!({"name": "missing", "kind": "pods"})
    );
    let d = call(
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/gone",
        "",
    );
    assert_eq!(
        d["details"],
        serde_json::json!({"name": "gone", "group": "apps", "kind": "deployments"})
    );
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"twice"}}"#;
    call("POST", "/api/v1/namespaces/default/configmaps", cm);
    let again = call("POST", "/api/v1/namespaces/default/configmaps", cm);
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(again["details"]["name"], "twice");
    assert_eq!(again["details"]["kind"], "configmaps");
    let bad = call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
    );
    assert_eq!(bad["code"], 422, "{bad}");
    assert_eq!(bad["details"]["name"], "Bad_Name");
    assert_eq!(
        bad["details"]["causes"][0]["field"], "metadata.name",
        "{bad}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
