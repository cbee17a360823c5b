//! apps/v1 StatefulSet with the real kubectl: stable names, hostnames and subdomain;
//! OrderedReady makes one pod at a time, each after the lower ones are Running and
//! Ready; a deleted pod comes back under its name; `kubectl scale` removes from the
//! highest ordinal; a template change rolls from the highest ordinal down; `kubectl get
//! sts` and `kubectl rollout status`. Pod states are set through the status
//! subresource, as a kubelet reports them.

mod common;
use skiff_fixtures::process::Control;
use std::process::Output;
use std::time::{Duration, Instant};

struct K {
    kc: String,
}

impl K {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["--kubeconfig", self.kc.as_str()];
        all.extend_from_slice(args);
        skiff_fixtures::process::kubectl(&all, stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(o.status.success(), "kubectl {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Pod name → (revision label, being deleted), for the set's pods.
    fn pods(&self) -> Vec<(String, String, bool)> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.controller-revision-hash} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        let mut v: Vec<(String, String, bool)> = out
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (
                    w[0].to_string(),
                    w.get(1).unwrap_or(&"").to_string(),
                    w.len() > 2,
                )
            })
            .collect();
        v.sort();
        v
    }

    fn names(&self) -> Vec<String> {
        self.pods()
            .into_iter()
            .filter(|p| !p.2)
            .map(|p| p.0)
            .collect()
    }

    fn wait_names(&self, want: &[&str]) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.names();
            if n == want {
                return;
            }
            assert!(Instant::now() < end, "pods {n:?}, wanted {want:?}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// The pod runs and is Ready, as its kubelet would report.
    fn ready(&self, pod: &str) {
        self.ok(&[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
    }

    /// The kubelet's final delete of a pod being deleted (grace period 0).
    fn reap(&self) {
        for (name, _, deleting) in self.pods() {
            if deleting {
                let _ = self.run(
                    &["delete", "pod", &name, "--grace-period=0", "--force"],
                    None,
                );
            }
        }
    }
}

const SET: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  serviceName: web\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n";

#[test]
#[ignore = "needs kubectl"]
fn statefulsets_make_stable_pods_in_order() {
    let dir = std::env::temp_dir().join(format!("skiff-sts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let k = K {
        kc: cp.kubeconfig("admin.kubeconfig").display().to_string(),
    };
    let o = k.run(&["apply", "-f", "-"], Some(SET));
    assert!(o.status.success(), "{o:?}");
    // One at a time: web-1 only after web-0 is Running and Ready.
    k.wait_names(&["web-0"]);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        k.names(),
        ["web-0"],
        "no second pod before the first is Ready"
    );
    let spec = k.ok(&["get", "pod", "web-0", "-o", "jsonpath={.spec.hostname} {.spec.subdomain} {.metadata.labels.statefulset\\.kubernetes\\.io/pod-name}"]);
    assert_eq!(spec, "web-0 web web-0");
    k.ready("web-0");
    k.wait_names(&["web-0", "web-1"]);
    k.ready("web-1");
    k.wait_names(&["web-0", "web-1", "web-2"]);
    k.ready("web-2");
    let o = k.run(
        &["rollout", "status", "statefulset/web", "--timeout=20s"],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let table = k.ok(&["get", "statefulsets"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains("3/3")),
        "{table}"
    );
    // A deleted pod comes back under its own name.
    k.ok(&["delete", "pod", "web-1", "--wait=false"]);
    k.reap();
    k.wait_names(&["web-0", "web-1", "web-2"]);
    k.ready("web-1");
    // Scaling down removes the highest ordinal first, one at a time.
    k.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        k.reap();
        let n = k.names();
        if seen.last() != Some(&n) {
            seen.push(n.clone());
        }
        if n == ["web-0"] {
            break;
        }
        assert!(Instant::now() < end, "scale down: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.iter()
            .all(|n| n.len() != 2 || n == &["web-0", "web-1"]),
        "web-2 went before web-1: {seen:?}"
    );
    // A template change rolls out (the pod is replaced with the new revision).
    let before = k.pods()[0].1.clone();
    k.ok(&["set", "env", "statefulset/web", "MODE=new"]);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        k.reap();
        let p = k.pods();
        if p.len() == 1 && !p[0].2 && p[0].1 != before {
            break;
        }
        assert!(Instant::now() < end, "rolling update: {p:?}");
        std::thread::sleep(Duration::from_millis(150));
    }
    // What may not change is refused.
    let o = k.run(
        &[
            "patch",
            "statefulset",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"serviceName":"other"}}"#,
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Forbidden"),
        "{o:?}"
    );
}
