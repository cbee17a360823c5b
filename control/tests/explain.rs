//! `kubectl explain` (kubectl 1.27 and 1.33) reads the served kinds' OpenAPI v3 schemas:
//! kinds, nested fields with their types and descriptions, required markers, every
//! served group. And the schemas do not change client-side apply: kubectl still merges
//! lists by their keys, as with its compiled-in patch strategies (a container another
//! writer added survives an apply; one the manifest dropped is deleted).

mod common;
use skiff_fixtures::process::{kubectl_as, kubectl_range, Control};

fn run(k: &str, kc: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = kubectl_as(k, kc, args, stdin);
    assert_eq!(code, 0, "{k} {args:?}: {err}");
    out
}

#[test]
#[ignore = "needs kubectl"]
fn explain_reads_the_schemas_and_apply_still_merges_by_key() {
    let dir = std::env::temp_dir().join(format!("skiff-explain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    for k in kubectl_range() {
        let pods = run(&k, &kc, &["explain", "pods"], None);
        assert!(
            pods.starts_with("KIND:       Pod\nVERSION:    v1\n"),
            "{k}: {pods}"
        );
        assert!(
            pods.contains("Pod is a collection of containers"),
            "{k}: {pods}"
        );
        assert!(pods.contains("  spec\t<PodSpec>"), "{k}: {pods}");
        let replicas = run(&k, &kc, &["explain", "deployment.spec.replicas"], None);
        assert!(replicas.contains("GROUP:      apps"), "{k}: {replicas}");
        assert!(
            replicas.contains("FIELD: replicas <integer>"),
            "{k}: {replicas}"
        );
        assert!(
            replicas.contains("Number of desired pods"),
            "{k}: {replicas}"
        );
        let containers = run(&k, &kc, &["explain", "pods.spec.containers"], None);
        assert!(
            containers.contains("FIELD: containers <[]Container>"),
            "{k}: {containers}"
        );
        assert!(
            containers.contains("  name\t<string> -required-"),
            "{k}: {containers}"
        );
        // Every served group has its kinds described.
        for (what, group) in [
            ("cronjobs.spec.schedule", "batch"),
            ("endpointslices.endpoints", "discovery.k8s.io"),
            ("leases.spec.holderIdentity", "coordination.k8s.io"),
            ("clusterrolebindings.roleRef", "rbac.authorization.k8s.io"),
            ("statefulsets.spec.serviceName", "apps"),
        ] {
            let out = run(&k, &kc, &["explain", what], None);
            assert!(
                out.contains(&format!("GROUP:      {group}")),
                "{k} {what}: {out}"
            );
            assert!(out.contains("DESCRIPTION:"), "{k} {what}: {out}");
        }
        let (code, _, err) = kubectl_as(&k, &kc, &["explain", "pods.spec.nosuch"], None);
        assert_ne!(code, 0);
        assert!(err.contains("nosuch"), "{k}: {err}");
    }
    // Client-side apply after another writer added a container: merged by name, the
    // other writer's container stays and the one the manifest dropped goes (without the
    // merge key, kubectl would send the list whole and the server would keep both).
    for (i, k) in kubectl_range().into_iter().enumerate() {
        let name = format!("web{i}");
        let manifest = |containers: &str| {
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers: {containers}\n")
        };
        let first = "[{name: a, image: 'busybox:1'}, {name: c, image: redis}]";
        run(&k, &kc, &["apply", "-f", "-"], Some(&manifest(first)));
        let patch =
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"nginx"}]}}}}"#;
        run(&k, &kc, &["patch", "deployment", &name, "-p", patch], None);
        let (code, _, err) = kubectl_as(
            &k,
            &kc,
            &["apply", "-f", "-"],
            Some(&manifest("[{name: a, image: 'busybox:2'}]")),
        );
        assert_eq!(code, 0, "{k}: {err}");
        assert!(!err.contains("openapi v3"), "{k}: {err}");
        let images = run(
            &k,
            &kc,
            &[
                "get",
                "deployment",
                &name,
                "-o",
                "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {end}",
            ],
            None,
        );
        assert_eq!(images.trim(), "a=busybox:2 b=nginx", "{k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
