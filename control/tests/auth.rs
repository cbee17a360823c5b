//! Who a client is and what it may do, with the real kubectl 1.27 and 1.33 over TLS:
//! `kubectl auth whoami` reads the certificate's user and groups; RBAC decides for
//! users (forbidden until a binding grants, and only where it grants), the Node
//! authorizer for a node's credentials (its own objects, and only the secrets its pods
//! use); `kubectl auth can-i` answers with the same authorizer.

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

/// kubectl as `kc`, expecting success; its stdout.
fn ok(k: &str, kc: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = kubectl_as(k, kc, args, None);
    assert_eq!(code, 0, "{k} {args:?}: {err}");
    out
}

/// kubectl as `kc`, expecting a refusal; its stderr.
fn refused(k: &str, kc: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = kubectl_as(k, kc, args, None);
    assert_ne!(code, 0, "{k} {args:?} was allowed: {out}");
    err
}

fn can_i(k: &str, kc: &std::path::Path, args: &[&str]) -> String {
    let mut a = vec!["auth", "can-i"];
    a.extend(args);
    kubectl_as(k, kc, &a, None).1.trim().to_string()
}

#[test]
#[ignore = "needs kubectl"]
fn rbac_decides_for_users_and_the_node_authorizer_for_nodes() {
    let dir = std::env::temp_dir().join(format!("skiff-rbac-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let admin = cp.kubeconfig("admin.kubeconfig");
    let alice = cp.kubeconfig_as("alice.kubeconfig", Some("alice"), &["devs"]);
    let node = cp.kubeconfig_as("n1.kubeconfig", Some("system:node:n1"), &["system:nodes"]);
    let k = &kubectl_range()[0];
    // kubectl 1.33 sends its typed creates (role, rolebinding, …) as protobuf.
    let newest = kubectl_range().last().unwrap().clone();
    // The bootstrap roles exist, as kube-apiserver's.
    let roles = ok(k, &admin, &["get", "clusterroles", "-o", "name"]);
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
    ] {
        assert!(
            roles
                .lines()
                .any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{r}")),
            "{r}: {roles}"
        );
    }
    let secret = |name: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{k: v}}\n")
    };
    for s in ["s1", "s2"] {
        let (code, _, err) = kubectl_as(k, &admin, &["apply", "-f", "-"], Some(&secret(s)));
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = kubectl_as(k, &admin, &["apply", "-f", "-"], Some(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n  volumes: [{name: v, secret: {secretName: s1}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p3}\nspec:\n  nodeName: n2\n  containers: [{name: c, image: busybox}]\n"));
    assert_eq!(code, 0, "{err}");

    for k in kubectl_range() {
        // A user with no binding: discovery and self-reviews only.
        let err = refused(&k, &alice, &["get", "pods"]);
        assert!(
            err.contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
            "{k}: {err}"
        );
        assert_eq!(can_i(&k, &alice, &["list", "pods"]), "no", "{k}");
        let who = ok(
            &k,
            &alice,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        assert_eq!(who, "alice");
    }
    // view in default for group devs: reads there, not secrets, not writes, not elsewhere.
    ok(
        &newest,
        &admin,
        &[
            "create",
            "rolebinding",
            "devs-view",
            "--clusterrole=view",
            "--group=devs",
            "-n",
            "default",
        ],
    );
    for k in kubectl_range() {
        let out = ok(&k, &alice, &["get", "pods", "-o", "name"]);
        assert_eq!(out.trim(), "pod/p1\npod/p3", "{k}");
        assert_eq!(can_i(&k, &alice, &["list", "pods"]), "yes", "{k}");
        assert_eq!(can_i(&k, &alice, &["create", "pods"]), "no", "{k}");
        assert_eq!(
            can_i(&k, &alice, &["list", "pods", "-n", "kube-system"]),
            "no",
            "{k}"
        );
        let err = refused(&k, &alice, &["get", "secret", "s1"]);
        assert!(err.contains("secrets \"s1\" is forbidden"), "{k}: {err}");
        refused(&k, &alice, &["delete", "pod", "p1"]);
        refused(&k, &alice, &["get", "pods", "-n", "kube-system"]);
    }
    // A Role of the namespace granted to the user by name.
    ok(
        &newest,
        &admin,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get",
            "--resource=secrets",
            "--resource-name=s2",
        ],
    );
    ok(
        &newest,
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-s2",
            "--role=secret-reader",
            "--user=alice",
        ],
    );
    ok(k, &alice, &["get", "secret", "s2"]);
    refused(k, &alice, &["get", "secret", "s1"]);

    // Administering a namespace is no way to more: alice may bind what she holds, not
    // cluster-admin.
    ok(k, &admin, &["create", "namespace", "team"]);
    ok(
        &newest,
        &admin,
        &[
            "create",
            "rolebinding",
            "alice-admin",
            "--clusterrole=admin",
            "--user=alice",
            "-n",
            "team",
        ],
    );
    for (i, k) in kubectl_range().into_iter().enumerate() {
        let err = refused(
            &k,
            &alice,
            &[
                "create",
                "rolebinding",
                "bob-all",
                "--clusterrole=cluster-admin",
                "--user=bob",
                "-n",
                "team",
            ],
        );
        assert!(
            err.contains("attempting to grant RBAC permissions not currently held"),
            "{k}: {err}"
        );
        let b = format!("bob-view-{i}");
        ok(
            &k,
            &alice,
            &[
                "create",
                "rolebinding",
                &b,
                "--clusterrole=view",
                "--user=bob",
                "-n",
                "team",
            ],
        );
    }

    // A node: its pod's secret, not another; its own Node, not another's.
    for k in kubectl_range() {
        let who = ok(
            &k,
            &node,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        assert_eq!(who, "system:node:n1");
        ok(&k, &node, &["get", "secret", "s1"]);
        let err = refused(&k, &node, &["get", "secret", "s2"]);
        assert!(
            err.contains("no relationship found between node 'n1' and this object"),
            "{k}: {err}"
        );
        refused(&k, &node, &["get", "secrets"]);
        ok(&k, &node, &["get", "pods", "-A"]);
        refused(&k, &node, &["label", "node", "n2", "x=y"]);
        refused(&k, &node, &["delete", "pod", "p3", "--wait=false"]);
        assert_eq!(can_i(&k, &node, &["get", "secret/s1"]), "yes", "{k}");
        assert_eq!(
            can_i(&k, &node, &["get", "secret/s2"]),
            "no - no relationship found between node 'n1' and this object",
            "{k}"
        );
    }
    // NodeRestriction: a node creates no Node but its own.
    let (code, _, err) = kubectl_as(
        k,
        &node,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata: {name: n3}\n"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("node \"n1\" is not allowed to modify node \"n3\""),
        "{err}"
    );
    // Bound to n1, a pod is n1's to delete (the kubelet's half of graceful deletion).
    let (code, _, err) = kubectl_as(k, &admin, &["apply", "-f", "-"], Some(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p2}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n"));
    assert_eq!(code, 0, "{err}");
    ok(
        k,
        &node,
        &["delete", "pod", "p2", "--grace-period=0", "--force"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
