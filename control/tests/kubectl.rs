//! The real kubectl (1.27–1.33, as installed) against the API server on loopback:
//! apply/get/delete with server-side tables, bad manifests, `get -w`, and a restart that
//! loses nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{Backend, Server};

fn kubectls() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (27..=33)
        .map(|m| PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}")))
        .filter(|p| p.exists())
        .collect();
    if v.is_empty() && Path::new("/usr/bin/kubectl").exists() {
        v.push("/usr/bin/kubectl".into());
    }
    v
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
";

#[test]
#[ignore = "needs kubectl"]
fn kubectl_apply_get_delete_across_versions() {
    let bins = kubectls();
    assert!(!bins.is_empty(), "needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    for (i, k) in bins.iter().enumerate() {
        let ns = format!("v{i}");
        let o = s.kubectl(
            k,
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
            )),
        );
        assert!(o.status.success(), "{}: {}", k.display(), out(&o));
        // Default client-side validation: needs /openapi/v3 from us.
        let o = s.kubectl(
            k,
            &["apply", "-n", &ns, "-f", "-"],
            Some(&DEPLOY.replace("REPLICAS", "3")),
        );
        assert!(
            out(&o).contains("deployment.apps/web created"),
            "{}: {}",
            k.display(),
            out(&o)
        );
        let o = s.kubectl(
            k,
            &["apply", "-n", &ns, "-f", "-"],
            Some(&DEPLOY.replace("REPLICAS", "5")),
        );
        assert!(
            out(&o).contains("deployment.apps/web configured"),
            "{}: {}",
            k.display(),
            out(&o)
        );
        let o = s.kubectl(
            k,
            &[
                "get",
                "deploy",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.replicas} {.metadata.generation} {.metadata.labels.app}",
            ],
            None,
        );
        assert_eq!(out(&o), "5 2 web", "{}", k.display());
        let o = s.kubectl(k, &["get", "deployments", "-n", &ns], None);
        let text = out(&o);
        assert!(
            text.starts_with("NAME")
                && text.contains("READY")
                && text.contains("UP-TO-DATE")
                && text.contains("web"),
            "server-side table: {text}"
        );
        let o = s.kubectl(
            k,
            &["delete", "deployment", "web", "-n", &ns, "--wait=false"],
            None,
        );
        assert!(out(&o).contains("deleted"), "{}: {}", k.display(), out(&o));
        let o = s.kubectl(k, &["get", "deployment", "web", "-n", &ns], None);
        assert!(
            !o.status.success() && out(&o).contains("\"web\" not found"),
            "{}",
            out(&o)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_reported_and_nothing_is_written() {
    bad_input(Backend::embedded("api-bad"));
}

#[test]
#[ignore = "needs etcd"]
fn bad_input_is_reported_and_nothing_is_written_on_etcd() {
    {
        let b = Backend::etcd("api-bad");
        bad_input(b);
    }
}

fn bad_input(backend: Backend) {
    let Some(k) = kubectls().pop() else { return };
    let s = Server::serve(backend.store());
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n"),
    );
    assert!(!o.status.success());
    assert!(
        out(&o).contains("Invalid value: \"Bad_Name\""),
        "{}",
        out(&o)
    );
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some(&DEPLOY.replace("REPLICAS", "three")),
    );
    assert!(
        !o.status.success(),
        "a string where an integer belongs is refused: {}",
        out(&o)
    );
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: [\n"),
    );
    assert!(!o.status.success(), "malformed YAML: {}", out(&o));
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"),
    );
    assert!(!o.status.success(), "unknown kind: {}", out(&o));
    let o = s.kubectl(
        &k,
        &["apply", "-n", "missing-ns", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"),
    );
    assert!(
        out(&o).contains("namespaces \"missing-ns\" not found"),
        "{}",
        out(&o)
    );
    let o = s.kubectl(
        &k,
        &["get", "configmaps,deployments", "-A", "-o", "name"],
        None,
    );
    assert_eq!(out(&o).trim(), "", "nothing half-written: {}", out(&o));
}

#[test]
fn get_watch_streams_and_restart_keeps_objects() {
    watch_and_restart(Backend::embedded("api-watch"));
}

#[test]
#[ignore = "needs etcd"]
fn get_watch_streams_and_restart_keeps_objects_on_etcd() {
    {
        let b = Backend::etcd("api-watch");
        watch_and_restart(b);
    }
}

fn watch_and_restart(backend: Backend) {
    let Some(k) = kubectls().pop() else { return };
    let s = Server::serve(backend.store());
    let mut w = Command::new(&k)
        .arg("--server")
        .arg(format!("http://{}", s.addr))
        .args(["get", "configmaps", "-w", "--request-timeout=20s"])
        .env("KUBECONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    for n in ["one", "two"] {
        let o = s.kubectl(
            &k,
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\ndata:\n  k: v\n"
            )),
        );
        assert!(o.status.success(), "{}", out(&o));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    let _ = w.kill();
    let text = String::from_utf8_lossy(&w.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        text.contains("one") && text.contains("two"),
        "watch streamed both: {text}"
    );
    drop(s);
    // A restart of the control plane loses nothing.
    let s = Server::serve(backend.store());
    let o = s.kubectl(&k, &["get", "configmaps", "-o", "name"], None);
    assert_eq!(out(&o).trim(), "configmap/one\nconfigmap/two");
}

fn service(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n{extra}")
}

#[test]
fn service_cluster_ips_and_node_ports_are_never_duplicated() {
    let Some(k) = kubectls().pop() else { return };
    let dir = std::env::temp_dir().join(format!("skiff-api-svc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ip_of = |s: &Server, n: &str| {
        out(&s.kubectl(
            &k,
            &[
                "get",
                "svc",
                n,
                "-o",
                "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
            ],
            None,
        ))
    };
    let s = Server::start(&dir);
    for (n, extra) in [
        ("a", ""),
        ("b", "  type: NodePort\n"),
        ("c", "  type: NodePort\n"),
    ] {
        let o = s.kubectl(&k, &["apply", "-f", "-"], Some(&service(n, extra)));
        assert!(o.status.success(), "{}", out(&o));
    }
    let (a, b, c) = (ip_of(&s, "a"), ip_of(&s, "b"), ip_of(&s, "c"));
    assert!(
        a.starts_with("10.96.") && b.starts_with("10.96.") && c.starts_with("10.96."),
        "{a} {b} {c}"
    );
    let ips: std::collections::BTreeSet<&str> = [&a, &b, &c]
        .iter()
        .map(|x| x.split(' ').next().unwrap())
        .collect();
    assert_eq!(ips.len(), 3, "distinct cluster IPs: {a} {b} {c}");
    assert_ne!(
        b.split(' ').nth(1),
        c.split(' ').nth(1),
        "distinct node ports: {b} / {c}"
    );
    let taken = a.split(' ').next().unwrap().to_string();
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some(&service("d", &format!("  clusterIP: {taken}\n"))),
    );
    assert!(
        !o.status.success() && out(&o).contains("provided IP is already allocated"),
        "{}",
        out(&o)
    );
    drop(s);
    // After a restart the allocations are still known.
    let s = Server::start(&dir);
    let o = s.kubectl(&k, &["apply", "-f", "-"], Some(&service("e", "")));
    assert!(o.status.success(), "{}", out(&o));
    let e = ip_of(&s, "e");
    assert!(
        !ips.contains(e.split(' ').next().unwrap()),
        "reused after restart: {e}"
    );
    // Deleting a service frees its address.
    assert!(s
        .kubectl(&k, &["delete", "svc", "a", "--wait=false"], None)
        .status
        .success());
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some(&service("f", &format!("  clusterIP: {taken}\n"))),
    );
    assert!(o.status.success(), "freed IP reusable: {}", out(&o));
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

const TWO_CONTAINERS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 1
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: app
        image: IMAGE
        ports:
        - containerPort: 8080
        env:
        ENV
      - name: sidecar
        image: busybox
";

/// kubectl apply of a changed manifest sends a strategic merge patch: lists of
/// containers and env vars merge by name, removed entries are deleted, the rest stays.
#[test]
#[ignore = "needs kubectl"]
fn apply_updates_merge_lists_by_key() {
    let bins = kubectls();
    assert!(!bins.is_empty(), "needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-smp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    // The oldest and newest kubectl installed.
    let mut pick = vec![bins[0].clone()];
    if bins.len() > 1 {
        pick.push(bins[bins.len() - 1].clone());
    }
    for (i, k) in pick.iter().enumerate() {
        let ns = format!("smp{i}");
        assert!(
            s.kubectl(k, &["create", "namespace", &ns], None)
                .status
                .success()
                || {
                    // kubectl 1.33's typed create sends protobuf; apply works in every version.
                    s.kubectl(
                        k,
                        &["apply", "-f", "-"],
                        Some(&format!(
                            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
                        )),
                    )
                    .status
                    .success()
                }
        );
        let first = TWO_CONTAINERS.replace("IMAGE", "app:1").replace(
            "ENV",
            "- {name: A, value: \"1\"}\n        - {name: B, value: \"2\"}",
        );
        let o = s.kubectl(k, &["-n", &ns, "apply", "-f", "-"], Some(&first));
        assert!(o.status.success(), "{}", out(&o));
        // Someone else adds a field kubectl apply does not own: it must survive.
        let o = s.kubectl(
            k,
            &["-n", &ns, "patch", "deployment", "api", "--type", "strategic", "-p",
              r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","resources":{"limits":{"memory":"64Mi"}}}]}}}}"#],
            None,
        );
        assert!(o.status.success(), "{}", out(&o));
        let second = TWO_CONTAINERS
            .replace("IMAGE", "app:2")
            .replace("ENV", "- {name: A, value: \"1\"}");
        let o = s.kubectl(k, &["-n", &ns, "apply", "-f", "-"], Some(&second));
        assert!(o.status.success(), "{}", out(&o));
        let o = s.kubectl(
            k,
            &["-n", &ns, "get", "deployment", "api", "-o", "json"],
            None,
        );
        let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let cs = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2, "{cs}");
        assert_eq!(cs[0]["image"], "app:2");
        assert_eq!(
            cs[0]["env"],
            serde_json::json!([{"name": "A", "value": "1"}]),
            "B removed"
        );
        assert_eq!(cs[0]["ports"][0]["containerPort"], 8080);
        assert_eq!(cs[0]["resources"]["limits"]["memory"], "64Mi", "kept: {cs}");
        assert_eq!(cs[1]["name"], "sidecar");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubectl get --chunk-size` pages with limit/continue; the pages add up to the list.
#[test]
fn paging_with_limit_and_continue() {
    let bins = kubectls();
    let k = bins.last().expect("needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    let mut yaml = String::new();
    for i in 0..7 {
        yaml.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  labels: {{even: \"{}\"}}\ndata: {{i: \"{i}\"}}\n", i % 2 == 0));
    }
    assert!(s
        .kubectl(k, &["apply", "-f", "-"], Some(&yaml))
        .status
        .success());
    let o = s.kubectl(
        k,
        &["get", "configmaps", "--chunk-size=2", "-o", "name"],
        None,
    );
    let names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let cms: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("configmap/cm-"))
        .collect();
    assert_eq!(cms.len(), 7, "{names:?}");
    // By hand: a page of 3 with a continue token, then the rest; selectors apply per page.
    let get = |q: &str| -> serde_json::Value {
        let o = s.kubectl(
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/default/configmaps?{q}"),
            ],
            None,
        );
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    let p1 = get("limit=3");
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    assert_eq!(p1["metadata"]["remainingItemCount"], 4);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let p2 = get(&format!("limit=10&continue={token}"));
    assert_eq!(p2["items"].as_array().unwrap().len(), 4);
    assert!(p2["metadata"]["continue"].is_null());
    let even = get("limit=2&labelSelector=even%3Dtrue");
    assert_eq!(even["items"].as_array().unwrap().len(), 2);
    // Kubernetes leaves the count out when a selector applies.
    assert!(even["metadata"]["remainingItemCount"].is_null(), "{even}");
    let token = even["metadata"]["continue"].as_str().unwrap().to_string();
    let rest = get(&format!(
        "limit=2&labelSelector=even%3Dtrue&continue={token}"
    ));
    let names: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cm-4", "cm-6"], "{rest}");
    let o = s.kubectl(
        k,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?limit=2&continue=bogus",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("continue"),
        "{}",
        out(&o)
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// pods/binding, as a scheduler posts it: binds once, a second binding is a conflict.
#[test]
fn pod_binding_subresource() {
    let bins = kubectls();
    let k = bins.last().expect("needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - {name: c, image: busybox}\n";
    assert!(s
        .kubectl(k, &["apply", "-f", "-"], Some(pod))
        .status
        .success());
    let binding = |node: &str| {
        format!("{{\"apiVersion\":\"v1\",\"kind\":\"Binding\",\"metadata\":{{\"name\":\"p\"}},\"target\":{{\"kind\":\"Node\",\"name\":\"{node}\"}}}}")
    };
    let o = s.kubectl(
        k,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p/binding",
            "-f",
            "-",
        ],
        Some(&binding("n1")),
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = s.kubectl(
        k,
        &["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "n1");
    let o = s.kubectl(
        k,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p/binding",
            "-f",
            "-",
        ],
        Some(&binding("n2")),
    );
    assert!(!o.status.success());
    assert!(out(&o).contains("already assigned"), "{}", out(&o));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Aggregated discovery: every kubectl version gets all groups and resources from /api
/// and /apis alone; plain JSON clients still get the legacy lists.
#[test]
#[ignore = "needs kubectl"]
fn aggregated_discovery_saves_per_group_requests() {
    let bins = kubectls();
    assert!(!bins.is_empty(), "needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-disc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    for k in &bins {
        let cache = dir.join(format!(
            "cache-{}",
            k.display().to_string().replace('/', "_")
        ));
        let o = s.kubectl(
            k,
            &[
                "--cache-dir",
                cache.to_str().unwrap(),
                "-v=6",
                "get",
                "deployments,pods,services,daemonsets",
            ],
            None,
        );
        assert!(o.status.success(), "{}: {}", k.display(), out(&o));
        let log = String::from_utf8_lossy(&o.stderr);
        let discovery: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("/apis/apps/v1?")
                    || l.contains("/api/v1?")
                    || l.contains("/apis/apps/v1 ")
            })
            .collect();
        assert!(
            discovery.is_empty(),
            "{}: per-group discovery requests: {discovery:?}",
            k.display()
        );
        assert!(log.contains("/apis?timeout"), "{}: {log}", k.display());
    }
    let k = &bins[0];
    let o = s.kubectl(k, &["get", "--raw", "/apis"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "APIGroupList");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Changing an immutable field is refused with kube's message; nothing is written.
#[test]
fn immutable_fields_are_refused() {
    let bins = kubectls();
    let k = bins.last().expect("needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-immut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    let d = DEPLOY.replace("REPLICAS", "1");
    assert!(s
        .kubectl(k, &["apply", "-f", "-"], Some(&d))
        .status
        .success());
    let changed = d
        .replace("matchLabels: {app: web}", "matchLabels: {app: other}")
        .replace(
            "labels: {app: web}\n    spec",
            "labels: {app: other}\n    spec",
        );
    let o = s.kubectl(k, &["apply", "-f", "-"], Some(&changed));
    assert!(!o.status.success());
    let msg = out(&o);
    assert!(
        msg.contains("spec.selector") && msg.contains("field is immutable"),
        "{msg}"
    );
    let o = s.kubectl(
        k,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.selector.matchLabels.app}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "web", "unchanged");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// kubectl's typed `create` commands send protobuf bodies (kubectl 1.32 and later):
/// namespaces, configmaps, secrets, service accounts and deployments come through.
#[test]
fn typed_create_with_protobuf_bodies() {
    let bins = kubectls();
    let k = bins.last().expect("needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-pb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    for args in [
        vec!["create", "namespace", "team"],
        vec![
            "-n",
            "team",
            "create",
            "configmap",
            "cm",
            "--from-literal=a=b",
        ],
        vec![
            "-n",
            "team",
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=pw=x",
        ],
        vec!["-n", "team", "create", "serviceaccount", "robot"],
        vec![
            "-n",
            "team",
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=2",
            "--port=80",
        ],
        vec![
            "-n",
            "team",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
        ],
        vec![
            "-n",
            "team",
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=443:https",
            "--node-port=30443",
        ],
        vec![
            "-n",
            "team",
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name=db.example.com",
        ],
    ] {
        let o = s.kubectl(k, &args, None);
        assert!(o.status.success(), "{args:?}: {}", out(&o));
    }
    let get = |args: &[&str]| String::from_utf8_lossy(&s.kubectl(k, args, None).stdout).to_string();
    assert_eq!(
        get(&["-n", "team", "get", "cm", "cm", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    assert_eq!(
        get(&[
            "-n",
            "team",
            "get",
            "secret",
            "pw",
            "-o",
            "jsonpath={.data.pw}"
        ]),
        "eA=="
    );
    assert_eq!(
        get(&["-n", "team", "get", "deployment", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]),
        "2 nginx:1.25 80"
    );
    // Services: ports with numeric and named target ports, a chosen node port.
    assert_eq!(
        get(&["-n", "team", "get", "svc", "web", "-o", "jsonpath={.spec.type} {.spec.selector.app} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.ports[0].protocol}"]),
        "ClusterIP web 80 8080 TCP"
    );
    assert!(get(&[
        "-n",
        "team",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}"
    ])
    .starts_with("10.96."));
    assert_eq!(
        get(&["-n", "team", "get", "svc", "np", "-o", "jsonpath={.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.ports[0].nodePort}"]),
        "NodePort 443 https 30443"
    );
    assert_eq!(
        get(&[
            "-n",
            "team",
            "get",
            "svc",
            "ext",
            "-o",
            "jsonpath={.spec.type} {.spec.externalName}"
        ]),
        "ExternalName db.example.com"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Server-side apply: fields the manager stops applying go, another manager's different
/// value is a conflict until forced.
#[test]
fn server_side_apply_owns_fields() {
    let bins = kubectls();
    let k = bins.last().expect("needs kubectl");
    let dir = std::env::temp_dir().join(format!("skiff-ssa-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Server::start(&dir);
    let first = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1\n        env: [{name: A, value: \"1\"}, {name: B, value: \"2\"}]\n";
    let o = s.kubectl(k, &["apply", "--server-side", "-f", "-"], Some(first));
    assert!(
        o.status.success() && out(&o).contains("serverside-applied"),
        "{}",
        out(&o)
    );
    let second = first
        .replace("replicas: 2", "replicas: 3")
        .replace(", {name: B, value: \"2\"}", "");
    let o = s.kubectl(k, &["apply", "--server-side", "-f", "-"], Some(&second));
    assert!(o.status.success(), "{}", out(&o));
    let get = |path: &str| {
        String::from_utf8_lossy(
            &s.kubectl(
                k,
                &[
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    &format!("jsonpath={path}"),
                ],
                None,
            )
            .stdout,
        )
        .to_string()
    };
    assert_eq!(get("{.spec.replicas}"), "3");
    assert_eq!(
        get("{.spec.template.spec.containers[0].env[*].name}"),
        "A",
        "B was dropped from the applied configuration"
    );
    let bob =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 5\n";
    let o = s.kubectl(
        k,
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(bob),
    );
    assert!(!o.status.success());
    assert!(
        out(&o).contains("conflict with \"kubectl\": .spec.replicas"),
        "{}",
        out(&o)
    );
    assert_eq!(get("{.spec.replicas}"), "3");
    let o = s.kubectl(
        k,
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(bob),
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(get("{.spec.replicas}"), "5");
    assert_eq!(get("{.metadata.managedFields[*].manager}"), "kubectl bob");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubectl get` prints kube's columns for each kind, `-o wide` adds the wide ones.
#[test]
fn get_prints_kube_columns() {
    let Some(k) = kubectls().pop() else { return };
    let backend = Backend::embedded("api-columns");
    let s = Server::serve(backend.store());
    let manifests = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {node-role.kubernetes.io/worker: ''}\nstatus:\n  conditions: [{type: Ready, status: 'True'}]\n  addresses: [{type: InternalIP, address: 10.9.0.5}]\n  nodeInfo: {kubeletVersion: v1.30.0}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata: {a: b, c: d}\n";
    let o = s.kubectl(&k, &["apply", "-f", "-"], Some(manifests));
    assert!(o.status.success(), "{}", out(&o));
    let table = |args: &[&str]| {
        let o = s.kubectl(&k, args, None);
        assert!(o.status.success(), "{}", out(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let rows: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        rows
    };
    let svc = table(&["get", "svc", "web"]);
    assert_eq!(
        svc[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(svc[1][..4], ["web", "NodePort", &svc[1][2], "<none>"]);
    assert!(svc[1][2].starts_with("10.96."), "{svc:?}");
    assert!(
        svc[1][4].starts_with("80:3") && svc[1][4].ends_with("/TCP"),
        "{svc:?}"
    );
    let nodes = table(&["get", "nodes", "-o", "wide"]);
    assert_eq!(
        nodes[0][..6],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    assert_eq!(nodes[1][..3], ["n1", "Ready", "worker"]);
    assert_eq!(nodes[1][4..6], ["v1.30.0", "10.9.0.5"]);
    let cm = table(&["get", "cm", "cm"]);
    assert_eq!(cm[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(cm[1][..2], ["cm", "2"]);
    // Endpoints, written by hand (no controllers run in this server): address:port each.
    let o = s.kubectl(
        &k,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\nsubsets:\n- addresses: [{ip: 10.244.0.5}, {ip: 10.244.0.6}]\n  ports: [{port: 8080}]\n"),
    );
    assert!(o.status.success(), "{}", out(&o));
    let ep = table(&["get", "endpoints", "web"]);
    assert_eq!(ep[0], ["NAME", "ENDPOINTS", "AGE"]);
    assert_eq!(ep[1][1], "10.244.0.5:8080,10.244.0.6:8080");
}

/// Plain writes own what they change (operation Update, manager from --field-manager or
/// the user agent), so a server-side apply that would change those fields conflicts
/// until forced, and takes them over when forced.
#[test]
fn plain_writes_own_fields_for_server_side_apply() {
    let Some(k) = kubectls().pop() else { return };
    let backend = Backend::embedded("api-managers");
    let s = Server::serve(backend.store());
    let run = |args: &[&str], stdin: Option<&str>| {
        let o = s.kubectl(&k, args, stdin);
        (o.status.success(), out(&o))
    };
    let managers = || {
        run(
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={range .metadata.managedFields[*]}{.manager}:{.operation}:{.fieldsV1.f:spec.f:replicas}{\"\\n\"}{end}",
            ],
            None,
        )
        .1
    };
    let (ok, o) = run(&["create", "deployment", "web", "--image=nginx"], None);
    assert!(ok, "{o}");
    assert!(
        managers().contains("kubectl-create:Update:{}"),
        "{}",
        managers()
    );
    let (ok, o) = run(
        &[
            "patch",
            "deploy",
            "web",
            "--field-manager=scaler",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ],
        None,
    );
    assert!(ok, "{o}");
    // The patch took spec.replicas from kubectl-create.
    let m = managers();
    assert!(m.contains("scaler:Update:{}"), "{m}");
    assert!(!m.contains("kubectl-create:Update:{}"), "{m}");
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: nginx, image: nginx}\n";
    let (ok, o) = run(&["apply", "--server-side", "-f", "-"], Some(manifest));
    assert!(
        !ok && o.contains("conflict with \"scaler\"") && o.contains(".spec.replicas"),
        "{o}"
    );
    // Applying the value scaler set is no conflict: both own it.
    let (ok, o) = run(
        &["apply", "--server-side", "-f", "-"],
        Some(&manifest.replace("replicas: 2", "replicas: 5")),
    );
    assert!(ok, "{o}");
    let (ok, o) = run(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(manifest),
    );
    assert!(ok, "{o}");
    let m = managers();
    assert!(m.contains("kubectl:Apply:{}"), "{m}");
    assert!(
        !m.contains("scaler"),
        "forced apply took scaler's only field: {m}"
    );
    assert_eq!(
        run(
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
            None
        )
        .1,
        "2"
    );
}
