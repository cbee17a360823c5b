//! The kubelet end to end: skiff-control (the real API server), skiff-runtime's CRI server
//! in a node network namespace with skiff-cni, and skiff-kubelet between them, driven by
//! the real kubectl. Needs root.

use skiff_fixtures as common;
use skiff_fixtures::process::{self, in_netns, kubectl_in, Control};

use common::node::Node;
use common::{require_root, unique};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn kubelet_bin() -> PathBuf {
    option_env!("CARGO_BIN_EXE_skiff-kubelet")
        .map(PathBuf::from)
        .expect("skiff-kubelet binary")
}

struct Kubelet {
    child: Child,
    log: PathBuf,
}

impl Kubelet {
    /// A kubelet for `node`; `extra` names it (`--hostname-override`) and adds flags.
    fn start(kubeconfig: &Path, node: &Node, log: PathBuf, extra: &[&str]) -> Kubelet {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // On the node: in its network namespace, where pod IPs and the API server are.
        let child = in_netns(node.netns.as_deref(), kubelet_bin())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--node-lease-renew-interval", "2"])
            .arg("--container-runtime-endpoint")
            .arg(format!("unix://{}", node.sock().display()))
            .arg("--pod-log-dir")
            .arg(node.root.join("pods"))
            .args(["--sync-frequency", "2s"])
            .arg("--root-dir")
            .arg(node.root.join("kubelet"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Kubelet { child, log }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    kc: String,
    netns: String,
}

impl Cluster {
    fn k(&self, args: &[&str]) -> String {
        let mut a = vec!["--kubeconfig", &self.kc];
        a.extend_from_slice(args);
        let o = kubectl_in(Some(&self.netns), &a, None);
        assert!(o.status.success(), "kubectl {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    }

    fn apply(&self, yaml: &str) {
        let o = kubectl_in(
            Some(&self.netns),
            &["--kubeconfig", &self.kc, "apply", "-f", "-"],
            Some(yaml),
        );
        assert!(o.status.success(), "apply: {o:?}");
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&a)).unwrap()
    }

    /// The pod with label t=<name> once it reaches `phase`.
    fn wait_phase(&self, name: &str, phase: &str, k: &Kubelet) -> Value {
        self.wait(
            30,
            &format!("{name} {phase}"),
            |c| {
                let p = c.pods(&format!("t={name}")).pop()?;
                (p["status"]["phase"] == phase).then_some(p)
            },
            k,
        )
    }

    /// (reason, message) of the events about a pod.
    fn events_of(&self, pod: &str) -> Vec<(String, String)> {
        self.json(&["get", "events"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["involvedObject"]["name"] == pod)
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn pods(&self, selector: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-l", selector])["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Poll `f` for up to `secs`; the last value seen goes into the panic message.
    fn wait<T>(
        &self,
        secs: u64,
        what: &str,
        mut f: impl FnMut(&Cluster) -> Option<T>,
        k: &Kubelet,
    ) -> T {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Some(v) = f(self) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out waiting for {what}\npods:\n{}\nkubelet log:\n{}",
            self.k(&["get", "pods", "-o", "yaml"]),
            k.log()
        );
    }
}

fn running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["podIP"].is_string()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn sandbox_uids(node: &Node) -> Vec<String> {
    let v = node.json(&["pods", "-o", "json"]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["labels"]["io.kubernetes.pod.uid"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: docker.io/skiff/busybox:latest
        imagePullPolicy: IfNotPresent
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        command: [sh, -c, 'echo hello from $(POD_NAME); exec httpd -f -p 80 -h /etc']
";

/// A Deployment and a Service of their own for the trace (the web pods stay two).
const TRACED: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: traced}
spec:
  replicas: 1
  selector: {matchLabels: {app: traced}}
  template:
    metadata: {labels: {app: traced}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: docker.io/skiff/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'exec httpd -f -p 80 -h /etc']
        readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1, initialDelaySeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: traced}
spec:
  selector: {app: traced}
  ports: [{port: 80}]
";

/// `kubectl skiff trace` on a pod started while the test watches the clock: every step
/// from the ReplicaSet's create to the proxy's rules, in order, each measured by its
/// component, and all of it inside the time the test saw the pod take.
fn trace_a_starting_pod(c: &Cluster, kubelet: &Kubelet) {
    let t0 = std::time::SystemTime::now();
    c.apply(TRACED);
    // --watch follows the pod from as soon as it exists (its readiness waits 2 s).
    let name = c.wait(
        30,
        "the traced pod created",
        |c| {
            let p = c.pods("app=traced").pop()?;
            p["metadata"]["name"].as_str().map(String::from)
        },
        kubelet,
    );
    let plugin = skiff_fixtures::workspace_bin("kubectl-skiff");
    let target = format!("pod/{name}");
    let mut watcher = in_netns(Some(&c.netns), &plugin)
        .args([
            "trace",
            &target,
            "--watch",
            "--timeout",
            "60s",
            "-o",
            "json",
        ])
        .args(["--kubeconfig", &c.kc])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pod = c.wait(
        60,
        "the traced pod Running and Ready",
        |c| c.pods("app=traced").into_iter().find(running_and_ready),
        kubelet,
    );
    let t1 = std::time::SystemTime::now();
    // The watcher ends by itself once every step happened, having printed each change.
    let end = Instant::now() + Duration::from_secs(60);
    while watcher.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        watcher.try_wait().unwrap().is_some(),
        "trace --watch did not end when the pod's path was complete"
    );
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let docs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap();
    let done = |d: &Value| {
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["pending"] == false)
            .count()
    };
    assert!(docs.len() >= 2, "one trace per change: {docs:?}");
    assert_eq!(docs[0]["complete"], false, "{:#}", docs[0]);
    assert_eq!(docs.last().unwrap()["complete"], true);
    assert!(
        docs.windows(2).all(|w| done(&w[0]) <= done(&w[1])),
        "steps only ever add up: {docs:?}"
    );
    let trace = c.wait(
        30,
        "a complete trace",
        |c| {
            let o = in_netns(Some(&c.netns), &plugin)
                .args(["trace", &target, "-o", "json", "--kubeconfig", &c.kc])
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            (v["complete"] == true).then_some(v)
        },
        kubelet,
    );
    let steps = trace["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names[..8],
        [
            "created",
            "scheduled",
            "kubelet saw it",
            "sandbox",
            "image httpd",
            "create httpd",
            "start httpd",
            "ready"
        ],
        "{trace:#}"
    );
    assert!(names[8].starts_with("endpointslice traced-"), "{names:?}");
    assert_eq!(names[9..], ["rules on n1"], "{trace:#}");
    let by: Vec<&str> = steps.iter().map(|s| s["by"].as_str().unwrap()).collect();
    assert_eq!(
        by,
        [
            "replicaset-controller",
            "default-scheduler",
            "kubelet/n1",
            "kubelet/n1",
            "kubelet/n1",
            "kubelet/n1",
            "kubelet/n1",
            "kubelet/n1",
            "endpointslice-controller",
            "kube-proxy/n1"
        ]
    );
    let detail = |i: usize| steps[i]["detail"].as_str().unwrap();
    assert!(
        detail(1).starts_with("n1: filters passed on 1 of 1"),
        "{}",
        detail(1)
    );
    let ip = pod["status"]["podIP"].as_str().unwrap();
    assert!(
        detail(3).contains(&format!("IP {ip}")) && detail(3).contains("CNI ADD"),
        "{}",
        detail(3)
    );
    assert_eq!(detail(7), "1 readiness probe(s) passed");
    assert!(
        steps[7]["durationSeconds"].as_f64().unwrap() >= 2.0,
        "readiness waits its initial delay: {}",
        steps[7]
    );
    // In order, inside the window the test saw, and adding up to no more than it.
    let secs = |s: &Value, k: &str| s[k].as_f64().unwrap();
    let offsets: Vec<f64> = steps.iter().map(|s| secs(s, "offsetSeconds")).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "steps out of order: {trace:#}"
    );
    let first = skiff_apimachinery::trace::parse_time(steps[0]["start"].as_str().unwrap()).unwrap();
    let tolerance = Duration::from_millis(500);
    assert!(
        first + Duration::from_millis(1) >= t0,
        "the first step began before the test created the pod"
    );
    let window = t1.duration_since(t0).unwrap();
    let ready = &steps[7];
    let to_ready =
        Duration::from_secs_f64(secs(ready, "offsetSeconds") + secs(ready, "durationSeconds"));
    let measured: f64 = steps[..8].iter().map(|s| secs(s, "durationSeconds")).sum();
    assert!(
        to_ready <= window + tolerance,
        "created → ready {to_ready:?} but the test saw {window:?}"
    );
    assert!(
        Duration::from_secs_f64(measured) <= to_ready + Duration::from_millis(1),
        "the steps ({measured} s) overlap beyond created → ready ({to_ready:?})"
    );
    for i in [3, 5, 6] {
        assert!(secs(&steps[i], "durationSeconds") > 0.0, "{}", steps[i]);
    }
    // The same as a kubectl plugin, found on PATH, as a table.
    let path = format!(
        "{}:{}",
        plugin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = in_netns(Some(&c.netns), "kubectl")
        .env("PATH", path)
        .args(["skiff", "trace", &target, "--kubeconfig", &c.kc])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        table.starts_with(&format!("POD default/{name} (Running on n1)\nSTEP")),
        "{table}"
    );
    assert!(
        table.contains("rules on n1") && table.contains("total "),
        "{table}"
    );
    println!("{table}");
}

/// A one-container busybox pod.
fn bare_pod(name: &str, restart: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{t: {name}}}}}\nspec:\n  \
         restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    \
         image: docker.io/skiff/busybox:latest\n    imagePullPolicy: IfNotPresent\n    \
         command: [sh, -c, '{script}']\n"
    )
}

/// Init containers in order before the app container; a failing one fails a Never pod.
const INIT_PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: withinit, labels: {t: withinit}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: w, emptyDir: {}}]
  initContainers:
  - {name: first, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, volumeMounts: [{name: w, mountPath: /w}], command: [sh, -c, 'echo one > /w/log']}
  - {name: second, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, volumeMounts: [{name: w, mountPath: /w}], command: [sh, -c, 'sleep 2; echo two >> /w/log']}
  containers:
  - {name: main, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, volumeMounts: [{name: w, mountPath: /w}], command: [sh, -c, 'cat /w/log; sleep 1000']}
---
apiVersion: v1
kind: Pod
metadata: {name: badinit, labels: {t: badinit}}
spec:
  restartPolicy: Never
  initContainers:
  - {name: i, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, command: [sh, -c, 'exit 2']}
  containers:
  - {name: c, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, '1000']}
";

/// ConfigMap and Secret in env and volumes, an emptyDir shared by two containers; and a
/// pod naming a ConfigMap that does not exist.
const CONFIG_PODS: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello, app.conf: \"port=80\\n\"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: cfg, labels: {t: cfg}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: conf, configMap: {name: app-config}}
  - {name: sec, secret: {secretName: app-secret, defaultMode: 0400}}
  - {name: shared, emptyDir: {}}
  containers:
  - name: main
    image: docker.io/skiff/busybox:latest
    imagePullPolicy: IfNotPresent
    env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}}]
    envFrom: [{secretRef: {name: app-secret}, prefix: S_}]
    volumeMounts:
    - {name: conf, mountPath: /etc/app, readOnly: true}
    - {name: sec, mountPath: /etc/secret}
    - {name: shared, mountPath: /shared}
    command: [sh, -c, 'echo $GREETING $S_password; cat /etc/app/app.conf /etc/secret/password; echo; stat -c %a /etc/secret/password; touch /etc/app/x 2>/dev/null || echo read-only; echo from-main > /shared/x; sleep 1000']
  - name: side
    image: docker.io/skiff/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: shared, mountPath: /data}]
    command: [sh, -c, 'while [ ! -f /data/x ]; do sleep 0.2; done; cat /data/x; sleep 1000']
---
apiVersion: v1
kind: Pod
metadata: {name: nocfg, labels: {t: nocfg}}
spec:
  containers:
  - name: c
    image: docker.io/skiff/busybox:latest
    imagePullPolicy: IfNotPresent
    env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, key: k}}}]
";

/// Liveness: alive for 3 s, then the probe fails and the kubelet restarts it.
/// Readiness over HTTP from the node: not ready until /ready exists, 5 s in; a TCP
/// startup probe holds it until the server listens.
const PROBE_PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: live, labels: {t: live}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/skiff/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 1000']
    livenessProbe: {exec: {command: [test, -f, /tmp/alive]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: ready, labels: {t: ready}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/skiff/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir /w; sleep 1; httpd -p 8080 -h /w; sleep 5; echo ok > /w/ready; sleep 1000']
    ports: [{name: web, containerPort: 8080}]
    startupProbe: {tcpSocket: {port: web}, periodSeconds: 1, failureThreshold: 30}
    readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
";

fn others() -> String {
    let mut docs = vec![
        bare_pod("crash", "Always", "echo run; exit 3"),
        bare_pod("done", "Never", "exit 0"),
        bare_pod("failed", "Never", "echo bye; exit 7"),
        bare_pod(
            "ticker",
            "Always",
            "i=0; while true; do echo $i; i=$((i+1)); sleep 0.3; done",
        ),
    ];
    // For kubectl attach: answers its stdin until it closes.
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: echoer, labels: {t: echoer}}\nspec:\n  \
         restartPolicy: Never\n  containers:\n  - name: c\n    image: docker.io/skiff/busybox:latest\n    \
         imagePullPolicy: IfNotPresent\n    stdin: true\n    stdinOnce: true\n    \
         command: [sh, -c, 'while read l; do echo got:$l; done; echo eof']\n"
            .to_string(),
    );
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage, labels: {t: noimage}}\nspec:\n  \
         containers:\n  - {name: c, image: docker.io/skiff/nothere:1, imagePullPolicy: Never}\n"
            .to_string(),
    );
    // A registry that refuses connections: every pull fails at once.
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: badpull, labels: {t: badpull}}\nspec:\n  \
         containers:\n  - {name: c, image: 127.0.0.1:9/nothere:1, imagePullPolicy: Always}\n"
            .to_string(),
    );
    docs.join("---\n")
}

#[test]
#[ignore = "needs root"]
fn kubelet_runs_a_deployment_restarts_reports_and_survives_kill_9() {
    require_root();
    let mut node = Node::start(true);
    node.import_busybox();
    let dir = std::env::temp_dir().join(unique("skiff-kubelet"));
    std::fs::create_dir_all(&dir).unwrap();
    // The control plane runs in the node's network namespace too: there the kubelet
    // reaches both it and the pod IPs (for probes), as on a real node.
    let netns = node.netns.clone().unwrap();
    let control = Control::start_in(Some(&netns), &dir, &[]);
    let kc = control.kubeconfig("admin.kubeconfig");
    // The daemons run with their own credentials, as on a real node: the kubelet as
    // system:node:n1 (the Node authorizer), the proxy as system:kube-proxy (RBAC).
    let node_kc = control.kubeconfig_as("n1.kubeconfig", Some("system:node:n1"), &["system:nodes"]);
    let proxy_kc = control.kubeconfig_as("proxy.kubeconfig", Some("system:kube-proxy"), &[]);
    let c = Cluster {
        kc: kc.display().to_string(),
        netns: netns.clone(),
    };
    // The kubelet API's certificate, issued from the cluster CA.
    let pki = dir.join("kubelet-pki");
    let o = Command::new(process::binary())
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "kubelet-certs",
            "--node",
            "n1",
            "--san",
            "127.0.0.1",
            "--out",
        ])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let files: Vec<String> = ["kubelet.crt", "kubelet.key", "ca.crt"]
        .iter()
        .map(|f| pki.join(f).display().to_string())
        .collect();
    let tls = [
        "--tls-cert-file",
        files[0].as_str(),
        "--tls-private-key-file",
        files[1].as_str(),
        "--client-ca-file",
        files[2].as_str(),
        "--port",
        "0",
    ];
    // Pods resolve through the cluster's DNS address (kube-dns' ClusterIP).
    let tls = [
        &["--hostname-override", "n1", "--cluster-dns", "10.96.0.10"][..],
        &tls[..],
    ]
    .concat();
    let mut kubelet = Kubelet::start(&node_kc, &node, dir.join("kubelet.log"), &tls);

    // Registration: a Ready node with capacity, and a Lease that gets renewed.
    let n = c.wait(
        30,
        "node n1 Ready",
        |c| {
            let o = kubectl_in(
                Some(&c.netns),
                &["--kubeconfig", &c.kc, "get", "node", "n1", "-o", "json"],
                None,
            );
            let n: Value = serde_json::from_slice(&o.stdout).ok()?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|x| x["type"] == "Ready" && x["status"] == "True");
            ready.then_some(n)
        },
        &kubelet,
    );
    assert!(n["status"]["capacity"]["cpu"].is_string(), "{n}");
    assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
    assert!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("skiff"),
        "{n}"
    );
    let renew = |c: &Cluster| {
        c.json(&["get", "lease", "-n", "kube-node-lease", "n1"])["spec"]["renewTime"]
            .as_str()
            .map(String::from)
    };
    let first = c.wait(10, "lease", renew, &kubelet);
    c.wait(
        10,
        "lease renewal",
        |c| renew(c).filter(|t| *t != first),
        &kubelet,
    );
    // The kubelet's own events about its node, as kube's: Starting, then NodeReady.
    let node_events = c.wait(
        10,
        "the kubelet's node events",
        |c| {
            let e = c.k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=Node,involvedObject.name=n1,source=kubelet",
                "-o",
                "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
            ]);
            (e.contains("Starting: Starting kubelet.")
                && e.contains("NodeReady: Node n1 status is now: NodeReady"))
            .then_some(e)
        },
        &kubelet,
    );
    assert!(!node_events.contains("NodeNotReady"), "{node_events}");

    // A Deployment: the scheduler binds, the kubelet runs, reports IPs and readiness.
    c.apply(WEB);
    let pods = c.wait(
        60,
        "2 web pods running and ready",
        |c| {
            let p = c.pods("app=web");
            (p.len() == 2 && p.iter().all(running_and_ready)).then_some(p)
        },
        &kubelet,
    );
    c.k(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert!(ip.starts_with("10.127."), "{p}");
        // Served from the pod: /etc/hostname is the pod's name.
        let o = node.in_node(&format!("busybox wget -qO- http://{ip}/hostname"));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), name, "{o:?}");
        // The container's output, in the kubelet's log layout, with $(POD_NAME) expanded.
        let uid = p["metadata"]["uid"].as_str().unwrap();
        let log = node
            .root
            .join(format!("pods/default_{name}_{uid}/httpd/0.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains(&format!("hello from {name}")),
            "{}: {text:?}",
            log.display()
        );
        let cs = &p["status"]["containerStatuses"][0];
        assert_eq!(cs["restartCount"], 0);
        assert!(
            cs["containerID"].as_str().unwrap().starts_with("skiff://"),
            "{cs}"
        );
    }
    // Both daemons log what they did to each pod, with its identity as fields.
    let klog = kubelet.log();
    let rlog = std::fs::read_to_string(node.root.join("server.log")).unwrap_or_default();
    for p in &pods {
        let (name, uid) = (
            p["metadata"]["name"].as_str().unwrap(),
            p["metadata"]["uid"].as_str().unwrap(),
        );
        assert!(
            klog.lines().any(|l| l.contains("sandbox created")
                && l.contains(&format!("pod=\"{name}\""))
                && l.contains(uid)),
            "kubelet log for {name}:\n{klog}"
        );
        assert!(
            rlog.lines()
                .any(|l| l.contains("RunPodSandbox") && l.contains(&format!("pod={name}"))),
            "runtime log for {name}:\n{rlog}"
        );
    }

    // What kubectl describe shows: the QoS class and the kubelet's events.
    assert_eq!(pods[0]["status"]["qosClass"], "BestEffort");
    let web0_events = c.events_of(pods[0]["metadata"]["name"].as_str().unwrap());
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            web0_events.iter().any(|(r, _)| r == reason),
            "{reason}: {web0_events:?}"
        );
    }

    // A Service over the Deployment through skiff-proxy on the node: the endpoints
    // controller picks the pods the kubelet reports Ready; ClusterIP and NodePort answer
    // from both pods.
    let proxy_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-proxy");
    let mut proxy = in_netns(Some(&netns), &proxy_bin)
        .arg("--kubeconfig")
        .arg(&proxy_kc)
        .args([
            "--cluster-cidr",
            "10.127.0.0/16",
            "--min-sync-period",
            "100ms",
            "--hostname-override",
            "n1",
            "--cluster-dns",
            "10.96.0.10",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("proxy.log")).unwrap())
        .spawn()
        .unwrap();
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 80}]\n");
    let svc = c.json(&["get", "service", "web"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    // The node's route for the service range (a real node's default route covers it).
    let _ = node.in_node(&format!("ip route add {cluster_ip}/32 dev lo"));
    let gateway = {
        let ip = pods[0]["status"]["podIP"].as_str().unwrap();
        format!("{}.1", &ip[..ip.rfind('.').unwrap()])
    };
    let names: std::collections::BTreeSet<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for url in [
        format!("http://{cluster_ip}/hostname"),
        format!("http://{gateway}:{node_port}/hostname"),
    ] {
        let seen = c.wait(
            30,
            &format!("both pods through {url}"),
            |_| {
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..40 {
                    let o = node.in_node(&format!("timeout 5 busybox wget -qO- {url}"));
                    seen.insert(String::from_utf8_lossy(&o.stdout).trim().to_string());
                    if seen == names {
                        return Some(seen);
                    }
                }
                None
            },
            &kubelet,
        );
        assert_eq!(seen, names);
    }
    // The proxy reports its syncs (kube-proxy's metric names) and its health.
    let get = |path: &str| {
        let o = node.in_node(&format!(
            "timeout 5 busybox wget -qO- http://127.0.0.1:{path}"
        ));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(get("10256/healthz").trim(), "ok");
    let metrics = get("10249/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(value("kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1.0);
    assert!(value("kubeproxy_sync_proxy_rules_last_timestamp_seconds") > 1.0e9);
    assert!(
        value("skiff_proxy_programmed_endpoints") >= 2.0,
        "{metrics}"
    );
    // Cluster DNS, answered on the node by the proxy at the kubelet's --cluster-dns: a
    // pod finds the Service by its short name (through the search list) and by its
    // full name.
    let pod0 = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    for name in ["web", "web.default.svc.cluster.local"] {
        let found = c.wait(
            20,
            &format!("{name} resolved in a pod"),
            |c| {
                let mut a = vec!["--kubeconfig", c.kc.as_str()];
                a.extend_from_slice(&["exec", pod0.as_str(), "--", "nslookup", name]);
                let o = kubectl_in(Some(&c.netns), &a, None);
                let out = String::from_utf8_lossy(&o.stdout).to_string();
                // "Address: IP" of the answer (the server's own line carries :53).
                let answered = out.lines().any(|l| {
                    l.split_whitespace().collect::<Vec<_>>() == ["Address:", cluster_ip.as_str()]
                });
                answered.then_some(out)
            },
            &kubelet,
        );
        assert!(found.contains("web.default.svc.cluster.local"), "{found}");
    }
    trace_a_starting_pod(&c, &kubelet);

    // Killed, the proxy leaves its rules: the Service keeps answering.
    let _ = proxy.kill();
    let _ = proxy.wait();
    let o = node.in_node(&format!(
        "timeout 5 busybox wget -qO- http://{cluster_ip}/hostname"
    ));
    assert!(
        names.contains(String::from_utf8_lossy(&o.stdout).trim()),
        "after the proxy died: {o:?}"
    );

    // Restarts in place per restartPolicy, with back-off; Never pods end Succeeded or
    // Failed; a missing image with pull policy Never is reported, not retried.
    let applied = Instant::now();
    c.apply(&others());
    let crash = c.wait(
        60,
        "crash restarted twice, in back-off",
        |c| {
            let p = c.pods("t=crash").pop()?;
            let cs = &p["status"]["containerStatuses"][0];
            (cs["restartCount"].as_i64()? >= 2
                && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                .then_some(p)
        },
        &kubelet,
    );
    let cs = &crash["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3, "{cs}");
    assert_eq!(crash["status"]["phase"], "Running", "{crash}");
    c.wait_phase("done", "Succeeded", &kubelet);
    // A Job runs its pod to completion on the node: kubectl wait sees it complete.
    c.apply("apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {name: c, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, command: [sh, -c, 'echo job-done']}\n");
    c.k(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    assert_eq!(c.k(&["logs", "job/once"]).trim(), "job-done");
    // A StatefulSet: stable names, in order, each pod's hostname its own name.
    c.apply("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers:\n      - {name: c, image: docker.io/skiff/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}\n");
    c.k(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    assert_eq!(c.k(&["exec", "db-1", "--", "hostname"]).trim(), "db-1");
    let failed = c.wait_phase("failed", "Failed", &kubelet);
    assert_eq!(
        failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        7
    );
    let noimage = c.wait(
        30,
        "ErrImageNeverPull",
        |c| {
            let p = c.pods("t=noimage").pop()?;
            (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "ErrImageNeverPull")
                .then_some(p)
        },
        &kubelet,
    );
    assert_eq!(noimage["status"]["phase"], "Pending");
    // A failing pull backs off (ImagePullBackOff, 10 s then 20 s), not a pull a second;
    // its repeated events are one Event with a count, as kube's recorder aggregates.
    c.wait(
        30,
        "ImagePullBackOff",
        |c| {
            let p = c.pods("t=badpull").pop()?;
            (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "ImagePullBackOff")
                .then_some(())
        },
        &kubelet,
    );
    std::thread::sleep(Duration::from_secs(12).saturating_sub(applied.elapsed()));
    let elapsed = applied.elapsed().as_secs() + 2;
    let pulls = c.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=badpull,reason=Pulling",
        "-o",
        "jsonpath={range .items[*]}{.count}{\"\\n\"}{end}",
    ]);
    let attempts: i64 = pulls
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .sum();
    // Tries at 0, 10, 30, 70, 150 s...: at most this many by now.
    let most = (0..20)
        .take_while(|k| 10 * ((1u64 << k) - 1) <= elapsed)
        .count() as i64;
    assert!(
        attempts >= 2 && attempts <= most,
        "pull attempts in {elapsed} s: {attempts}, at most {most} ({pulls:?})"
    );
    assert_eq!(
        pulls.lines().count(),
        1,
        "one aggregated Pulling event: {pulls:?}"
    );
    // What `kubectl get pods` shows is kube's pod printer: the reason, not the phase,
    // and when the last restart was.
    let table = c.k(&["get", "pods", "-l", "t in (crash,done,failed,noimage)"]);
    let status_of = |label: &str| {
        let name = c.pods(&format!("t={label}")).pop().unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} in {table}"))
            .to_string();
        let cols: Vec<String> = line.split_whitespace().map(String::from).collect();
        (cols[2].clone(), line)
    };
    let (crash_status, crash_line) = status_of("crash");
    assert!(
        crash_status == "CrashLoopBackOff" || crash_status == "Error",
        "{table}"
    );
    assert!(
        crash_line.contains(" ago)"),
        "restarts say when: {crash_line}"
    );
    assert_eq!(status_of("done").0, "Completed", "{table}");
    assert_eq!(status_of("failed").0, "Error", "{table}");
    assert_eq!(status_of("noimage").0, "ErrImageNeverPull", "{table}");

    // Probes: readiness follows the HTTP answer (not ready, then ready, never restarted);
    // a failed liveness probe restarts the container in place, with events.
    c.apply(PROBE_PODS);
    c.apply(INIT_PODS);
    let cond_ready = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"] == "True")
    };
    c.wait(
        30,
        "ready pod running but not Ready",
        |c| {
            let p = c.pods("t=ready").pop()?;
            let cs = &p["status"]["containerStatuses"][0];
            (cs["state"]["running"].is_object() && cond_ready(&p) == Some(false)).then_some(())
        },
        &kubelet,
    );
    let ready = c.wait(
        30,
        "ready pod Ready",
        |c| {
            c.pods("t=ready")
                .pop()
                .filter(|p| cond_ready(p) == Some(true))
        },
        &kubelet,
    );
    assert_eq!(
        ready["status"]["containerStatuses"][0]["restartCount"], 0,
        "{ready}"
    );
    assert_eq!(
        ready["status"]["containerStatuses"][0]["started"], true,
        "{ready}"
    );
    let live = c.wait(
        40,
        "live restarted after its liveness probe failed",
        |c| {
            let p = c.pods("t=live").pop()?;
            (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 1).then_some(p)
        },
        &kubelet,
    );
    let last = &live["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert!(last["exitCode"].as_i64().unwrap() != 0, "{live}");
    let of_live = c.events_of("live");
    assert!(
        of_live
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed"))
            && of_live.iter().any(|(r, _)| r == "Killing"),
        "{of_live:?}"
    );

    // Init containers ran in order, then the app container saw what both wrote; a failed
    // init container fails a Never pod and its app container never starts.
    let cond = |p: &Value, t: &str| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["status"] == "True")
    };
    let init = c.wait(
        30,
        "withinit Running",
        |c| c.pods("t=withinit").pop().filter(running_and_ready),
        &kubelet,
    );
    assert_eq!(cond(&init, "Initialized"), Some(true));
    let inits = init["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2, "{init}");
    assert!(
        inits
            .iter()
            .all(|s| s["state"]["terminated"]["exitCode"] == 0),
        "{init}"
    );
    let first_done = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let second_start = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(first_done <= second_start, "in order: {init}");
    c.wait(
        10,
        "withinit logs",
        |c| (c.k(&["logs", "withinit"]) == "one\ntwo\n").then_some(()),
        &kubelet,
    );
    let bad = c.wait_phase("badinit", "Failed", &kubelet);
    assert_eq!(cond(&bad, "Initialized"), Some(false), "{bad}");
    assert_eq!(
        bad["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        2
    );
    assert_eq!(
        bad["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing",
        "{bad}"
    );

    // ConfigMaps and Secrets reach env and files; an emptyDir is shared in the pod; a
    // missing ConfigMap is reported as kubectl shows it.
    c.apply(CONFIG_PODS);
    let cfg = c.wait(
        30,
        "cfg running",
        |c| c.pods("t=cfg").pop().filter(running_and_ready),
        &kubelet,
    );
    c.wait(
        10,
        "cfg logs",
        |c| {
            let main = c.k(&["logs", "cfg", "-c", "main"]);
            let side = c.k(&["logs", "cfg", "-c", "side"]);
            (main.contains("read-only") && side == "from-main\n").then_some(())
        },
        &kubelet,
    );
    assert_eq!(
        c.k(&["logs", "cfg", "-c", "main"]),
        "hello s3cret\nport=80\ns3cret\n400\nread-only\n"
    );
    // A ConfigMap change reaches the running pod's files.
    let o = kubectl_in(
        Some(&netns),
        &[
            "--kubeconfig",
            &c.kc,
            "patch",
            "configmap",
            "app-config",
            "-p",
            r#"{"data":{"app.conf":"port=81\n"}}"#,
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    c.wait(
        30,
        "updated app.conf in the pod",
        |c| {
            (c.k(&[
                "exec",
                "cfg",
                "-c",
                "main",
                "--",
                "cat",
                "/etc/app/app.conf",
            ]) == "port=81\n")
                .then_some(())
        },
        &kubelet,
    );
    let nocfg = c.wait(
        30,
        "CreateContainerConfigError",
        |c| {
            let p = c.pods("t=nocfg").pop()?;
            let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            (w["reason"] == "CreateContainerConfigError").then_some(w.clone())
        },
        &kubelet,
    );
    assert_eq!(
        nocfg["message"], "configmap \"absent\" not found",
        "{nocfg}"
    );
    // Retried every second, reported once.
    std::thread::sleep(Duration::from_secs(2));
    let failed: Vec<_> = c
        .events_of("nocfg")
        .into_iter()
        .filter(|(r, _)| r == "Failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].1.contains("configmap \"absent\" not found"),
        "{failed:?}"
    );
    let cfg_dir = node
        .root
        .join("kubelet/pods")
        .join(cfg["metadata"]["uid"].as_str().unwrap());
    assert!(cfg_dir
        .join("volumes/kubernetes.io~secret/sec/password")
        .exists());
    c.k(&["delete", "pod", "cfg", "nocfg", "--timeout=60s"]);
    assert!(!cfg_dir.exists(), "volumes of a deleted pod are removed");

    // kubectl logs through the API server and the kubelet API.
    let web0 = pods[0]["metadata"]["name"].as_str().unwrap();
    let out = c.k(&["logs", web0]);
    assert_eq!(out, format!("hello from {web0}\n"));
    let out = c.k(&["logs", web0, "--timestamps"]);
    assert!(
        out.starts_with("20") && out.ends_with(&format!(" hello from {web0}\n")),
        "{out:?}"
    );
    assert_eq!(c.k(&["logs", "crash", "--previous"]), "run\n");
    assert_eq!(
        c.k(&["logs", "failed", "-f"]),
        "bye\n",
        "follow ends with the run"
    );
    let o = kubectl_in(
        Some(&netns),
        &["--kubeconfig", &c.kc, "logs", "noimage"],
        None,
    );
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no log yet"),
        "{o:?}"
    );
    // A follower sees new lines as they come; the tail starts it at the last line.
    c.wait(
        30,
        "ticker running",
        |c| c.pods("t=ticker").pop().filter(running_and_ready),
        &kubelet,
    );
    let mut f = in_netns(Some(&netns), "kubectl")
        .args(["--kubeconfig", &c.kc, "logs", "-f", "--tail=1", "ticker"])
        .env("KUBECONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(f.stdout.take().unwrap()).lines();
        let first: u64 = lines.next().unwrap().unwrap().parse().unwrap();
        let second: u64 = lines.next().unwrap().unwrap().parse().unwrap();
        assert_eq!(second, first + 1);
    }
    let _ = f.kill();
    let _ = f.wait();
    // exec and port-forward through the API server and the kubelet API: kubectl 1.32
    // (WebSocket) and 1.27 (SPDY).
    assert_eq!(
        c.k(&["exec", web0, "--", "cat", "/etc/hostname"]),
        format!("{web0}\n")
    );
    // ClusterFirst: the kubelet's --cluster-dns, Kubernetes' search list, ndots:5.
    let resolv = c.k(&["exec", web0, "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 10.96.0.10\n")
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    let o = kubectl_in(
        Some(&netns),
        &[
            "--kubeconfig",
            &c.kc,
            "exec",
            web0,
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 3",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("oops"), "{o:?}");
    let spdy = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
    if Path::new(spdy).exists() {
        let mut cmd = in_netns(Some(&netns), spdy);
        cmd.args(["--kubeconfig", &c.kc, "exec", "-i", web0, "--", "cat"])
            .env("KUBECONFIG", "/dev/null");
        let o = common::output_with_input(cmd, "over spdy\n");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "over spdy\n", "{o:?}");
    }
    // attach -i: lines reach the container's stdin, answers come back, closing ends it.
    c.wait(
        30,
        "echoer running",
        |c| c.pods("t=echoer").pop().filter(running_and_ready),
        &kubelet,
    );
    let mut attach = in_netns(Some(&netns), "kubectl");
    attach
        .args(["--kubeconfig", &c.kc, "attach", "-i", "echoer"])
        .env("KUBECONFIG", "/dev/null");
    let o = common::output_with_input(attach, "x\ny\n");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "got:x\ngot:y\neof\n",
        "{o:?}"
    );
    c.wait_phase("echoer", "Succeeded", &kubelet);
    let mut pf = in_netns(Some(&netns), "kubectl");
    pf.args([
        "--kubeconfig",
        &c.kc,
        "port-forward",
        &format!("pod/{web0}"),
        ":80",
    ])
    .env("KUBECONFIG", "/dev/null");
    let (mut pf, port) = common::forwarding_port(pf);
    let o = in_netns(Some(&netns), "busybox")
        .args(["wget", "-qO-", &format!("http://127.0.0.1:{port}/hostname")])
        .output()
        .unwrap();
    let _ = pf.kill();
    let _ = pf.wait();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{web0}\n"),
        "{o:?}"
    );

    // The kubelet API wants the API server's (or an admin's) certificate.
    let port = c.json(&["get", "node", "n1"])["status"]["daemonEndpoints"]["kubeletEndpoint"]
        ["Port"]
        .as_u64()
        .unwrap();
    let o = in_netns(Some(&netns), "curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "https://127.0.0.1:{port}/containerLogs/default/{web0}/httpd"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401", "{o:?}");

    // Graceful deletion: kubectl delete returns once the kubelet has stopped the pod
    // and removed its sandbox; the ReplicaSet makes a new pod.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    let victim_uid = pods[0]["metadata"]["uid"].as_str().unwrap().to_string();
    c.k(&["delete", "pod", &victim, "--timeout=60s"]);
    assert!(
        !sandbox_uids(&node).contains(&victim_uid),
        "sandbox of {victim} still there"
    );
    c.wait(
        60,
        "replacement pod running",
        |c| {
            let p = c.pods("app=web");
            (p.len() == 2
                && p.iter().all(running_and_ready)
                && p.iter().all(|p| p["metadata"]["name"] != victim.as_str()))
            .then_some(())
        },
        &kubelet,
    );

    // kill -9 and restart: the same sandboxes and containers are taken over, nothing
    // is started twice.
    let before = node.json(&["ps", "-a", "-o", "json"]);
    let count = |v: &Value| v["containers"].as_array().map_or(0, |a| a.len());
    kubelet.kill9();
    let web_before = c.pods("app=web");
    let mut kubelet = Kubelet::start(&node_kc, &node, dir.join("kubelet2.log"), &tls);
    std::thread::sleep(Duration::from_secs(4));
    let after = c.pods("app=web");
    for (a, b) in web_before.iter().zip(&after) {
        assert_eq!(a["metadata"]["uid"], b["metadata"]["uid"]);
        assert_eq!(
            b["status"]["containerStatuses"][0]["restartCount"], 0,
            "{b}"
        );
        assert_eq!(
            a["status"]["containerStatuses"][0]["containerID"],
            b["status"]["containerStatuses"][0]["containerID"]
        );
    }
    let now = node.json(&["ps", "-a", "-o", "json"]);
    // The crash pod may have restarted meanwhile; web containers must not have.
    let web_ids = |v: &Value| -> Vec<String> {
        v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["labels"]["io.kubernetes.container.name"] == "httpd")
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        web_ids(&before),
        web_ids(&now),
        "before {} now {}",
        count(&before),
        count(&now)
    );

    // The runtime dies: the node is NotReady at the next heartbeat; when it is back
    // (recovering its pods from disk) the node is Ready and the pods ran on untouched.
    let node_ready = |c: &Cluster| {
        c.json(&["get", "node", "n1"])["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == "Ready"))
            .map(|x| x["status"] == "True")
    };
    node.kill9();
    c.wait(
        20,
        "node NotReady without its runtime",
        |c| (node_ready(c) == Some(false)).then_some(()),
        &kubelet,
    );
    node.spawn();
    c.wait(
        20,
        "node Ready again",
        |c| (node_ready(c) == Some(true)).then_some(()),
        &kubelet,
    );
    let again = c.pods("app=web");
    for (a, b) in after.iter().zip(&again) {
        assert_eq!(
            a["status"]["containerStatuses"][0]["containerID"],
            b["status"]["containerStatuses"][0]["containerID"]
        );
        assert_eq!(
            b["status"]["containerStatuses"][0]["restartCount"], 0,
            "{b}"
        );
    }

    // Scale to zero: every web sandbox goes.
    let web_uids: Vec<String> = after
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    c.k(&["scale", "deployment/web", "--replicas=0"]);
    c.wait(
        60,
        "web sandboxes removed",
        |_| {
            let s = sandbox_uids(&node);
            web_uids.iter().all(|u| !s.contains(u)).then_some(())
        },
        &kubelet,
    );
    c.wait(
        30,
        "web pods gone",
        |c| c.pods("app=web").is_empty().then_some(()),
        &kubelet,
    );
    kubelet.kill9();
    drop(control);
    if std::env::var_os("SKIFF_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Issue a node's kubelet certificate and return the kubelet flags that serve with it.
fn kubelet_tls(dir: &Path, node: &str, ip: &str) -> Vec<String> {
    let pki = dir.join(format!("pki-{node}"));
    let o = Command::new(process::binary())
        .arg("--data-dir")
        .arg(dir)
        .args(["kubelet-certs", "--node", node, "--san", ip, "--out"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let f = |n: &str| pki.join(n).display().to_string();
    [
        "--hostname-override",
        node,
        "--node-ip",
        ip,
        "--tls-cert-file",
        &f("kubelet.crt"),
        "--tls-private-key-file",
        &f("kubelet.key"),
        "--client-ca-file",
        &f("ca.crt"),
        "--port",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn sh(script: &str) {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "{script}: {o:?}");
}

/// Two nodes (network namespaces joined by a private link, each with its own pod subnet
/// routed to the other) in one cluster: a Deployment spreads over both, pods reach each
/// other across nodes, a Service answers from both nodes' pods, logs and exec reach a pod
/// on the other node; then a node is lost and its pods are recreated on the other.
#[test]
#[ignore = "needs root"]
fn two_nodes_one_cluster_and_a_lost_nodes_pods_move() {
    require_root();
    // The pod network comes from the Nodes: node IPAM gives each a podCIDR out of the
    // cluster CIDR, the kubelet hands it to the runtime (CRI UpdateRuntimeConfig), the
    // CNI allocates from it, and skiff-proxy (--pod-network host-gw) routes each node's
    // podCIDR through its InternalIP. No route or subnet is set by hand.
    let cluster = format!("10.{}.0.0/16", 150 + std::process::id() % 50);
    let a = Node::start_in_cluster(&cluster);
    let b = Node::start_in_cluster(&cluster);
    a.import_busybox();
    b.import_busybox();
    let (na, nb) = (a.netns.clone().unwrap(), b.netns.clone().unwrap());
    // The underlay: one link between the two nodes.
    let link = format!("ul{}", std::process::id() % 100000);
    sh(&format!(
        "ip link add {link}a netns {na} type veth peer name {link}b netns {nb} && \
         ip -n {na} addr add 10.126.0.1/24 dev {link}a && ip -n {na} link set {link}a up && \
         ip -n {nb} addr add 10.126.0.2/24 dev {link}b && ip -n {nb} link set {link}b up && \
         ip netns exec {na} sysctl -qw net.ipv4.ip_forward=1 && ip netns exec {nb} sysctl -qw net.ipv4.ip_forward=1 && \
         ip -n {na} route add 10.96.0.0/12 dev lo && ip -n {nb} route add 10.96.0.0/12 dev lo"
    ));
    let dir = std::env::temp_dir().join(unique("skiff-2nodes"));
    std::fs::create_dir_all(&dir).unwrap();
    // The control plane on node a, reachable from node b; a lost node's pods go after
    // 6 s without a Lease plus 2 s of toleration.
    let control = Control::start_at(
        Some(&na),
        "10.126.0.1",
        &dir,
        &[
            "--node-monitor-grace-period",
            "6s",
            "--default-unreachable-toleration-seconds",
            "2",
            "--cluster-cidr",
            &cluster,
        ],
    );
    let kc = control.kubeconfig("admin.kubeconfig");
    let c = Cluster {
        kc: kc.display().to_string(),
        netns: na.clone(),
    };
    let flags_a = kubelet_tls(&dir, "na", "10.126.0.1");
    let flags_b = kubelet_tls(&dir, "nb", "10.126.0.2");
    let ka = Kubelet::start(
        &kc,
        &a,
        dir.join("kubelet-a.log"),
        &flags_a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut kb = Kubelet::start(
        &kc,
        &b,
        dir.join("kubelet-b.log"),
        &flags_b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let proxy_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-proxy");
    let mut proxies: Vec<Child> = [(&na, "na"), (&nb, "nb")]
        .iter()
        .map(|(ns, name)| {
            in_netns(Some(ns), &proxy_bin)
                .arg("--kubeconfig")
                .arg(&kc)
                .args([
                    "--cluster-cidr",
                    &cluster,
                    "--min-sync-period",
                    "100ms",
                    "--pod-network",
                    "host-gw",
                ])
                .args(["--hostname-override", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let ready_nodes = |c: &Cluster| {
        let nodes = c.json(&["get", "nodes"]);
        let n = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x["type"] == "Ready" && x["status"] == "True")
                })
            })
            .count();
        (n == 2).then_some(())
    };
    c.wait(30, "two Ready nodes", ready_nodes, &ka);

    c.apply(&WEB.replace("replicas: 2", "replicas: 4"));
    let running = |c: &Cluster| {
        let p: Vec<Value> = c
            .pods("app=web")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (p.len() == 4 && p.iter().all(running_and_ready)).then_some(p)
    };
    let pods = c.wait(60, "4 web pods running", running, &kb);
    let on = |n: &str| pods.iter().filter(|p| p["spec"]["nodeName"] == n).count();
    assert!(
        on("na") > 0 && on("nb") > 0,
        "spread over both nodes: {pods:?}"
    );
    // Each pod's address is in its Node's podCIDR (the only place a subnet comes from).
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let cidr = c.json(&["get", "node", node])["spec"]["podCIDR"]
            .as_str()
            .unwrap_or_else(|| panic!("{node} has no podCIDR"))
            .to_string();
        let (net, len) = cidr.split_once('/').unwrap();
        let (net, len): (std::net::Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
        let ip: std::net::Ipv4Addr = p["status"]["podIP"].as_str().unwrap().parse().unwrap();
        let mask = u32::MAX << (32 - len);
        assert_eq!(
            u32::from(ip) & mask,
            u32::from(net),
            "{ip} of a pod on {node} in {cidr}"
        );
    }
    // Across nodes: every pod answers from node a, by its IP.
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let ip = p["status"]["podIP"].as_str().unwrap();
        let o = a.in_node(&format!("timeout 5 busybox wget -qO- http://{ip}/hostname"));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            name,
            "{p}: {o:?}"
        );
    }
    // A Service answers from both nodes' pods, asked on node b.
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 80}]\n");
    let cip = c.json(&["get", "service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let names: std::collections::BTreeSet<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    c.wait(
        30,
        "all four pods through the ClusterIP from node b",
        |_| {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..60 {
                let o = b.in_node(&format!(
                    "timeout 5 busybox wget -qO- http://{cip}/hostname"
                ));
                seen.insert(String::from_utf8_lossy(&o.stdout).trim().to_string());
                if seen == names {
                    return Some(());
                }
            }
            None
        },
        &kb,
    );
    // logs and exec of a pod on node b, through the API server on node a.
    let on_b = pods.iter().find(|p| p["spec"]["nodeName"] == "nb").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(c
        .k(&["logs", &on_b])
        .contains(&format!("hello from {on_b}")));
    assert_eq!(c.k(&["exec", &on_b, "--", "hostname"]), format!("{on_b}\n"));

    // Node b is lost (its kubelet and proxy stop): NotReady, its pods evicted, and the
    // ReplicaSet runs four again, all on node a.
    kb.kill9();
    let _ = proxies[1].kill();
    let lost_at = std::time::Instant::now();
    let moved = c.wait(
        60,
        "four running pods, all on node a",
        |c| {
            let p = running(c)?;
            p.iter().all(|p| p["spec"]["nodeName"] == "na").then_some(p)
        },
        &ka,
    );
    eprintln!("pods moved {:?} after the node was lost", lost_at.elapsed());
    // Node a's pods ran on; node b's were replaced by new ones.
    let now: std::collections::BTreeSet<String> = moved
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        now.intersection(&names).count(),
        on("na"),
        "{now:?} vs {names:?}"
    );
    let nb_ready = c.json(&["get", "node", "nb"])["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "Ready")
        .map(|x| x["status"].clone());
    assert_ne!(nb_ready, Some(Value::from("True")));
    // Its kubelet comes back: the node is Ready again within a few heartbeats (the
    // controller's Unknown is corrected at once, not at the next minute's status post).
    drop(kb);
    let back_at = std::time::Instant::now();
    let kb2 = Kubelet::start(
        &kc,
        &b,
        dir.join("kubelet-b2.log"),
        &flags_b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    c.wait(
        20,
        "node b Ready again",
        |c| {
            let n = c.json(&["get", "node", "nb"]);
            let conds = n["status"]["conditions"].as_array()?.clone();
            let ready = conds.iter().find(|x| x["type"] == "Ready")?;
            let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            (ready["status"] == "True" && taints.is_empty()).then_some(())
        },
        &kb2,
    );
    eprintln!(
        "node b Ready {:?} after its kubelet restarted",
        back_at.elapsed()
    );
    // A kubelet cut off for a while (frozen here) and back: the controller marked the
    // node Unknown meanwhile; the kubelet puts Ready back at its next heartbeat, not at
    // its next once-a-minute status post.
    let node_ready = |c: &Cluster| -> Option<String> {
        let n = c.json(&["get", "node", "nb"]);
        let conds = n["status"]["conditions"].as_array()?.clone();
        let r = conds.iter().find(|x| x["type"] == "Ready")?;
        r["status"].as_str().map(str::to_string)
    };
    let signal = |sig: &str| {
        let pid = kb2.child.id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    // A condition's lastTransitionTime says when it last changed, not when it was
    // last posted: MemoryPressure stays False, so its time stays through the re-post.
    let since = |c: &Cluster, typ: &str| -> Option<String> {
        let n = c.json(&["get", "node", "nb"]);
        let conds = n["status"]["conditions"].as_array()?.clone();
        let r = conds.iter().find(|x| x["type"] == typ)?;
        r["lastTransitionTime"].as_str().map(str::to_string)
    };
    let memory_since = since(&c, "MemoryPressure").expect("MemoryPressure condition");
    signal("-STOP");
    c.wait(
        30,
        "node b Unknown while its kubelet is frozen",
        |c| (node_ready(c)? == "Unknown").then_some(()),
        &kb2,
    );
    signal("-CONT");
    let thawed = std::time::Instant::now();
    c.wait(
        15,
        "node b Ready after its kubelet is back",
        |c| (node_ready(c)? == "True").then_some(()),
        &kb2,
    );
    eprintln!(
        "node b Ready {:?} after its kubelet was thawed",
        thawed.elapsed()
    );
    assert_eq!(
        since(&c, "MemoryPressure").as_deref(),
        Some(memory_since.as_str()),
        "MemoryPressure's lastTransitionTime moved without a transition"
    );
    for p in &mut proxies {
        let _ = p.kill();
        let _ = p.wait();
    }
    drop(control);
    if std::env::var_os("SKIFF_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A kubelet started before its API server: it says why it cannot register, keeps
/// trying, and registers (Ready) once the server is there, without a restart.
#[test]
#[ignore = "needs root"]
fn a_kubelet_started_before_the_api_server_waits_for_it() {
    let node = Node::start(false);
    let dir = std::env::temp_dir().join(unique("skiff-kubelet-early"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cp_dir = dir.join("control");
    let o = Command::new(process::binary())
        .arg("--data-dir")
        .arg(&cp_dir)
        .args([
            "kubeconfig",
            "--server",
            &format!("https://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let kc = dir.join("admin.kubeconfig");
    std::fs::write(&kc, &o.stdout).unwrap();
    let kubelet = Kubelet::start(
        &kc,
        &node,
        dir.join("kubelet.log"),
        &["--hostname-override", "early"],
    );
    let end = Instant::now() + Duration::from_secs(20);
    while !kubelet.log().contains("retrying") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        kubelet.log().contains("register the node"),
        "{}",
        kubelet.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut k = kubelet;
    assert!(
        k.child.try_wait().unwrap().is_none(),
        "the kubelet gave up: {}",
        k.log()
    );
    // The API server comes up on the address the kubeconfig names.
    let mut cp = Command::new(process::binary())
        .arg("--data-dir")
        .arg(&cp_dir)
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kcs = kc.to_str().unwrap().to_string();
    let end = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    while Instant::now() < end {
        let o = kubectl_in(None, &["--kubeconfig", &kcs, "get", "node", "early"], None);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if o.status.success() && last.contains(" Ready ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    k.kill9();
    let _ = cp.kill();
    let _ = cp.wait();
    assert!(last.contains(" Ready "), "{last}\n{}", k.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node joins with one command and no copied keys: `skiff-control token create`, then
/// the kubelet with --server, --token and --ca-cert-hash and a kubeconfig path that does
/// not exist yet. It checks the CA by its pin, gets its client and serving certificates
/// through CertificateSigningRequests, registers Ready, and serves its API (kubectl logs
/// through the API server verifies the serving certificate). A restart uses what it got.
/// A wrong pin or a wrong token is refused with a clear message, and nothing is written.
#[test]
#[ignore = "needs root"]
fn a_node_joins_with_a_token_and_a_wrong_one_is_refused() {
    let node = Node::start(false);
    node.import_busybox();
    let dir = std::env::temp_dir().join(unique("skiff-kubelet-join"));
    std::fs::create_dir_all(&dir).unwrap();
    let cp = Control::start(&dir.join("control"), &[]);
    let server = format!("https://127.0.0.1:{}", cp.port);
    let o = Command::new(process::binary())
        .arg("--data-dir")
        .arg(dir.join("control"))
        .args(["token", "create", "--server", &server])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let told = String::from_utf8(o.stderr).unwrap();
    let pin = told
        .split_whitespace()
        .skip_while(|w| *w != "--ca-cert-hash")
        .nth(1)
        .unwrap()
        .to_string();
    let admin = cp.kubeconfig("admin.kubeconfig");
    let admin = admin.to_str().unwrap();

    // Refused: a pin that is not the CA's, and a token that is not one.
    let run_to_end = |kc: &Path, tok: &str, pin: &str, name: &str| -> String {
        let mut k = Kubelet::start(
            kc,
            &node,
            dir.join(format!("{name}.log")),
            &[
                "--hostname-override",
                name,
                "--port",
                "0",
                "--server",
                &server,
                "--token",
                tok,
                "--ca-cert-hash",
                pin,
            ],
        );
        let end = Instant::now() + Duration::from_secs(30);
        while k.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "still running: {}", k.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!k.child.wait().unwrap().success());
        k.log()
    };
    let bad_kc = dir.join("bad.kubeconfig");
    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    let log = run_to_end(&bad_kc, &token, &wrong_pin, "pinless");
    assert!(log.contains("does not match --ca-cert-hash"), "{log}");
    let log = run_to_end(
        &bad_kc,
        &format!("{}.0000000000000000", &token[..6]),
        &pin,
        "tokenless",
    );
    assert!(log.contains("the token was refused"), "{log}");
    assert!(!bad_kc.exists(), "nothing written for a refused join");

    let kc = dir.join("kubelet.kubeconfig");
    let mut kubelet = Kubelet::start(
        &kc,
        &node,
        dir.join("kubelet.log"),
        &[
            "--hostname-override",
            "joiner",
            "--port",
            "0",
            "--server",
            &server,
            "--token",
            &token,
            "--ca-cert-hash",
            &pin,
        ],
    );
    let ready = |what: &str, k: &Kubelet| {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let o = kubectl_in(
                None,
                &["--kubeconfig", admin, "get", "node", "joiner"],
                None,
            );
            if String::from_utf8_lossy(&o.stdout).contains(" Ready ") {
                break;
            }
            assert!(Instant::now() < end, "{what}: not Ready\n{}", k.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    ready("joined", &kubelet);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the node's key is root's alone");
    let csrs = kubectl_in(None, &["--kubeconfig", admin, "get", "csr"], None);
    let csrs = String::from_utf8_lossy(&csrs.stdout).to_string();
    assert!(
        csrs.contains("kube-apiserver-client-kubelet")
            && csrs.contains(&format!("system:bootstrap:{}", &token[..6]))
            && csrs.contains("kubelet-serving")
            && csrs.contains("system:node:joiner"),
        "{csrs}"
    );
    // The API server reaches the kubelet's API over the issued serving certificate.
    // On the node's own network (this node has no pod network).
    let pod = bare_pod(
        "hello",
        "Never",
        "echo hello-from-a-joined-node; sleep 3600",
    )
    .replace("  containers:\n", "  hostNetwork: true\n  containers:\n");
    let o = kubectl_in(
        None,
        &["--kubeconfig", admin, "apply", "-f", "-"],
        Some(&pod),
    );
    assert!(o.status.success(), "{o:?}");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let o = kubectl_in(None, &["--kubeconfig", admin, "logs", "hello"], None);
        if String::from_utf8_lossy(&o.stdout).contains("hello-from-a-joined-node") {
            break;
        }
        assert!(Instant::now() < end, "no logs: {o:?}\n{}", kubelet.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Restarted, it uses its credentials (the token is gone meanwhile).
    kubelet.kill9();
    let o = Command::new(process::binary())
        .arg("--data-dir")
        .arg(dir.join("control"))
        .args(["token", "delete", &token[..6], "--server", &server])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let kubelet = Kubelet::start(
        &kc,
        &node,
        dir.join("kubelet.log"),
        &[
            "--hostname-override",
            "joiner",
            "--port",
            "0",
            "--server",
            &server,
            "--token",
            &token,
            "--ca-cert-hash",
            &pin,
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    ready("restarted", &kubelet);
    drop(kubelet);
    let o = kubectl_in(
        None,
        &[
            "--kubeconfig",
            admin,
            "delete",
            "pod",
            "hello",
            "--grace-period",
            "0",
            "--force",
        ],
        None,
    );
    let _ = o;
    if std::env::var_os("SKIFF_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// An HA control plane as a node sees it: three skiff-control on one etcd (sharing the
/// cluster CA, as a second master gets it), a kubelet whose kubeconfig names the first
/// and whose --api-servers names the others. The first is killed: the kubelet's
/// connections fail over through its local front, its Lease keeps being renewed (the
/// node stays Ready past the grace period), and a pod created through another server
/// runs on it.
#[test]
#[ignore = "needs root and etcd"]
fn a_node_fails_over_between_api_servers() {
    let node = Node::start(false);
    node.import_busybox();
    let dir = std::env::temp_dir().join(unique("skiff-kubelet-ha"));
    std::fs::create_dir_all(&dir).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (client, peer) = (free(), free());
    let mut etcd = Command::new("etcd")
        .args(["--name", "m0", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("m0=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian's etcd-server)");
    let etcd_url = format!("http://127.0.0.1:{client}");
    let flags = [
        "--etcd-servers",
        etcd_url.as_str(),
        "--leader-elect",
        "true",
        "--node-monitor-grace-period",
        "8s",
    ];
    let mut first = Control::start(&dir.join("cp1"), &flags);
    // The other masters get the cluster CA (kubeadm copies it the same way).
    for cp in ["cp2", "cp3"] {
        let pki = dir.join(cp).join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        for f in ["ca.crt", "ca.key"] {
            std::fs::copy(dir.join("cp1/pki").join(f), pki.join(f)).unwrap();
        }
    }
    let others = [
        Control::start(&dir.join("cp2"), &flags),
        Control::start(&dir.join("cp3"), &flags),
    ];
    let node_kc = first.kubeconfig_as("node.kubeconfig", Some("system:node:ha"), &["system:nodes"]);
    let admin = others[0].kubeconfig("admin.kubeconfig");
    let admin = admin.to_str().unwrap().to_string();
    let servers = others
        .iter()
        .map(|c| format!("https://127.0.0.1:{}", c.port))
        .collect::<Vec<_>>()
        .join(",");
    let kubelet = Kubelet::start(
        &node_kc,
        &node,
        dir.join("kubelet.log"),
        &[
            "--hostname-override",
            "ha",
            "--port",
            "0",
            "--api-servers",
            &servers,
        ],
    );
    let k = |args: &[&str]| {
        let mut a = vec!["--kubeconfig", admin.as_str()];
        a.extend_from_slice(args);
        let o = kubectl_in(None, &a, None);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let wait = |what: &str, secs: u64, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < end, "{what}\n{}", kubelet.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait("node Ready", 60, &|| {
        k(&["get", "node", "ha"]).contains(" Ready ")
    });
    let renewed = || {
        k(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "ha",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    first.kill();
    let before = renewed();
    // Past the grace period: still Ready, and the Lease moved on.
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        k(&["get", "node", "ha"]).contains(" Ready "),
        "{}",
        kubelet.log()
    );
    assert_ne!(
        renewed(),
        before,
        "the Lease was not renewed after the failover"
    );
    assert!(
        kubelet.log().contains("API server failover"),
        "{}",
        kubelet.log()
    );
    let pod = bare_pod("after", "Never", "echo ran-after-failover; sleep 3600")
        .replace("  containers:\n", "  hostNetwork: true\n  containers:\n");
    let o = kubectl_in(
        None,
        &["--kubeconfig", &admin, "apply", "-f", "-"],
        Some(&pod),
    );
    assert!(o.status.success(), "{o:?}");
    wait("the new pod Running on the node", 60, &|| {
        k(&[
            "get",
            "pod",
            "after",
            "-o",
            "jsonpath={.spec.nodeName} {.status.phase}",
        ]) == "ha Running"
    });
    drop(kubelet);
    drop(others);
    let _ = etcd.kill();
    let _ = etcd.wait();
    if std::env::var_os("SKIFF_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
