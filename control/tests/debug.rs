//! `kubectl debug` (1.27 and 1.33) gets Kubernetes' answers, never a crash: pods carry
//! the securityContext kube-apiserver always defaults, and the ephemeralcontainers
//! subresource this server does not serve is a 404 whose details name nothing, which
//! kubectl reports as "ephemeral containers are disabled for this cluster".

mod common;
use skiff_fixtures::process::{kubectl_as, kubectl_range, Control};

#[test]
#[ignore = "needs kubectl"]
fn kubectl_debug_is_answered_not_crashed() {
    let dir = std::env::temp_dir().join(format!("skiff-debug-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    for (i, k) in kubectl_range().into_iter().enumerate() {
        let pod = format!("p{i}");
        let (code, _, err) = kubectl_as(&k, &kc, &["run", &pod, "--image=busybox"], None);
        assert_eq!(code, 0, "{k}: {err}");
        let (code, out, _) = kubectl_as(
            &k,
            &kc,
            &["get", "pod", &pod, "-o", "jsonpath={.spec.securityContext}"],
            None,
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "{}"),
            "{k}: defaulted as kube-apiserver does"
        );
        let (code, _, err) = kubectl_as(
            &k,
            &kc,
            &["debug", &pod, "--image=busybox", "--", "true"],
            None,
        );
        assert!(!err.contains("panic"), "{k}: {err}");
        assert_ne!(code, 0, "{k}");
        assert!(
            err.contains("ephemeral containers are disabled for this cluster"),
            "{k}: {err}"
        );
        // A copy: kubectl 1.27 creates it in JSON; 1.33 sends protobuf, which this
        // server refuses with the reason rather than store part of it.
        let copy = format!("{pod}-copy");
        let (code, _, err) = kubectl_as(
            &k,
            &kc,
            &[
                "debug",
                &pod,
                "--image=busybox",
                &format!("--copy-to={copy}"),
                "--",
                "true",
            ],
            None,
        );
        assert!(!err.contains("panic"), "{k}: {err}");
        if code == 0 {
            let (code, _, err) = kubectl_as(&k, &kc, &["get", "pod", &copy], None);
            assert_eq!(code, 0, "{k}: {err}");
        } else {
            assert!(
                err.contains("is not supported in protobuf bodies; send JSON")
                    || err.contains("Pod in protobuf is not supported"),
                "{k}: {err}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
