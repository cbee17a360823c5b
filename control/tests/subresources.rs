//! Subresources as the kind's strategy declares them: a kind with a status (Pod) serves
//! `/status`, one without (ConfigMap) answers it with kube-apiserver's 404, so
//! `kubectl patch --subresource=status` of a ConfigMap fails instead of changing it.

mod common;
use skiff_fixtures::process::{kubectl_as, kubectl_range, Control};

#[test]
#[ignore = "needs kubectl"]
fn status_is_served_only_where_the_kind_has_one() {
    let dir = std::env::temp_dir().join(format!("skiff-subres-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    let k = kubectl_range().pop().expect("a kubectl");
    let run = |args: &[&str]| kubectl_as(&k, &kc, args, None);
    assert_eq!(
        run(&["create", "configmap", "c", "--from-literal=a=1"]).0,
        0
    );
    assert_eq!(run(&["run", "p", "--image=busybox"]).0, 0);
    let (code, out, err) = run(&["get", "--raw", "/api/v1/namespaces/default/pods/p/status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"kind\":\"Pod\""), "{out}");
    let (code, _, err) = run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps/c/status",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("NotFound") || err.contains("could not find"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "patch",
        "configmap",
        "c",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    assert_ne!(code, 0, "{err}");
    let (_, out, _) = run(&["get", "configmap", "c", "-o", "jsonpath={.data.a}"]);
    assert_eq!(out, "1");
    // A pod's status goes through its own subresource, its spec stays.
    let (code, _, err) = run(&[
        "patch",
        "pod",
        "p",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"message":"hi"},"spec":{"activeDeadlineSeconds":5}}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&[
        "get",
        "pod",
        "p",
        "-o",
        "jsonpath={.status.message}/{.spec.activeDeadlineSeconds}",
    ]);
    assert_eq!(out, "hi/");
    let _ = std::fs::remove_dir_all(&dir);
}
