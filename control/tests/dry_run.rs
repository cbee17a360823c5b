//! `?dryRun=All` (kubectl --dry-run=server, kubectl diff): the request is validated,
//! admitted and answered as the write would be, and nothing is stored — with the oldest
//! and newest kubectl installed.

mod common;
use skiff_fixtures::process::{kubectl_as, kubectl_range, Control};

#[test]
#[ignore = "needs kubectl"]
fn dry_run_writes_nothing() {
    for (i, k) in kubectl_range().iter().enumerate() {
        let dir = std::env::temp_dir().join(format!("skiff-dryrun-{i}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cp = Control::start(&dir, &[]);
        let kc = cp.kubeconfig("admin.kubeconfig");
        let run = |args: &[&str], stdin: Option<&str>| kubectl_as(k, &kc, args, stdin);
        // create: answered (with a uid, without a resourceVersion), not stored.
        let (code, out, err) = run(
            &[
                "create",
                "configmap",
                "dry",
                "--from-literal=a=b",
                "--dry-run=server",
                "-o",
                "json",
            ],
            None,
        );
        assert_eq!(code, 0, "{k}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["a"], "b");
        assert!(v["metadata"]["uid"].is_string(), "{out}");
        assert!(v["metadata"]["resourceVersion"].is_null(), "{out}");
        let (code, _, err) = run(&["get", "configmap", "dry"], None);
        assert_ne!(code, 0, "{k}: a dry-run create was stored");
        assert!(err.contains("not found"), "{err}");
        // scale, apply, delete of a real Deployment change nothing.
        let (code, _, err) = run(&["create", "deployment", "web", "--image", "nginx"], None);
        assert_eq!(code, 0, "{err}");
        let replicas = || {
            run(
                &[
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    "jsonpath={.spec.replicas}",
                ],
                None,
            )
            .1
        };
        let (code, _, err) = run(
            &[
                "scale",
                "deployment",
                "web",
                "--replicas",
                "5",
                "--dry-run=server",
            ],
            None,
        );
        assert_eq!(code, 0, "{k}: {err}");
        assert_eq!(replicas(), "1", "{k}: a dry-run scale was stored");
        let changed = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 4\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: nginx, image: nginx}\n";
        let (code, out, err) = run(&["apply", "--dry-run=server", "-f", "-"], Some(changed));
        assert_eq!(code, 0, "{k}: {out}{err}");
        assert_eq!(replicas(), "1", "{k}: a dry-run apply was stored");
        // kubectl diff: exit 1 with the difference, and the live object as it was.
        let (code, out, err) = run(&["diff", "-f", "-"], Some(changed));
        assert_eq!(code, 1, "{k}: {out}{err}");
        assert!(out.contains("replicas: 4"), "{out}");
        assert_eq!(replicas(), "1", "{k}: kubectl diff changed the live object");
        let (code, _, err) = run(&["delete", "deployment", "web", "--dry-run=server"], None);
        assert_eq!(code, 0, "{k}: {err}");
        assert_eq!(replicas(), "1", "{k}: a dry-run delete deleted");
        drop(cp);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
