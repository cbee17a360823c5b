//! `kubectl auth whoami` and `kubectl auth can-i` (kubectl 1.27 and 1.33) against the
//! TLS API with the admin's client certificate: the user and groups come from the
//! certificate; can-i answers with this server's rule (every authenticated client may
//! do everything: RBAC is not enforced yet) and says so.

mod common;
use skiff_fixtures::process::{kubectl_as, kubectl_range, Control};

#[test]
#[ignore = "needs kubectl"]
fn whoami_and_can_i() {
    let dir = std::env::temp_dir().join(format!("skiff-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig");
    for k in kubectl_range() {
        let (code, out, err) = kubectl_as(&k, &kc, &["auth", "whoami", "-o", "json"], None);
        assert_eq!(code, 0, "{k}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let info = &v["status"]["userInfo"];
        assert_eq!(info["username"], "skiff-admin", "{k}: {out}");
        let groups: Vec<&str> = info["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g.as_str())
            .collect();
        assert!(
            groups.contains(&"system:masters") && groups.contains(&"system:authenticated"),
            "{k}: {out}"
        );
        let (code, out, err) = kubectl_as(&k, &kc, &["auth", "can-i", "create", "pods"], None);
        assert_eq!((code, out.trim()), (0, "yes"), "{k}: {err}");
    }
}
