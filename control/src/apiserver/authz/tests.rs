use super::*;
use crate::apiserver::objects::encode;
use crate::store::Precondition;
use serde_json::{json, Value};

fn attrs(method: Method, path: &str) -> Attributes {
    Attributes::of(&method, path, false)
}

#[test]
fn request_attributes_follow_kubernetes_request_info() {
    // (method, path, verb, group, resource, subresource, namespace, name)
    let rows = [
        (Method::GET, "/api/v1/pods", "list", "", "pods", "", "", ""),
        (
            Method::GET,
            "/api/v1/namespaces/d/pods/p",
            "get",
            "",
            "pods",
            "",
            "d",
            "p",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/d/pods/p/log",
            "get",
            "",
            "pods",
            "log",
            "d",
            "p",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/d/pods/p/status",
            "patch",
            "",
            "pods",
            "status",
            "d",
            "p",
        ),
        (
            Method::POST,
            "/apis/apps/v1/namespaces/d/deployments",
            "create",
            "apps",
            "deployments",
            "",
            "d",
            "",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/d/pods",
            "deletecollection",
            "",
            "pods",
            "",
            "d",
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/d",
            "get",
            "",
            "namespaces",
            "",
            "d",
            "d",
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/d/finalize",
            "update",
            "",
            "namespaces",
            "finalize",
            "d",
            "d",
        ),
        (
            Method::GET,
            "/api/v1/watch/namespaces/d/pods",
            "watch",
            "",
            "pods",
            "",
            "d",
            "",
        ),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "kube-node-lease",
            "n1",
        ),
    ];
    for (m, path, verb, group, resource, sub, ns, name) in rows {
        let a = attrs(m, path);
        assert_eq!(
            (
                a.verb.as_str(),
                a.group.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
                a.namespace.as_str(),
                a.name.as_str(),
                a.path.is_none()
            ),
            (verb, group, resource, sub, ns, name, true),
            "{path}"
        );
    }
    assert_eq!(
        Attributes::of(&Method::GET, "/api/v1/pods", true).verb,
        "watch"
    );
    for p in [
        "/version",
        "/api",
        "/api/v1",
        "/apis/apps/v1",
        "/openapi/v3/apis/apps/v1",
    ] {
        let a = attrs(Method::GET, p);
        assert_eq!(
            (a.verb.as_str(), a.path.as_deref()),
            ("get", Some(p)),
            "{p}"
        );
    }
}

#[test]
fn rules_match_verbs_groups_resources_subresources_and_names() {
    let a = attrs(Method::GET, "/api/v1/namespaces/d/pods/p/log");
    let rule = |v: Value| rbac::rule_allows(&v, &a);
    assert!(rule(
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]})
    ));
    assert!(
        !rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})),
        "a subresource is its own"
    );
    assert!(rule(
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/log"]})
    ));
    assert!(rule(
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/*"]})
    ));
    assert!(!rule(
        json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods/log"]})
    ));
    assert!(!rule(
        json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods/log"]})
    ));
    assert!(rule(
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["p"]})
    ));
    assert!(!rule(
        json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["q"]})
    ));
    // resourceNames never match a list (no name).
    let list = attrs(Method::GET, "/api/v1/namespaces/d/pods");
    assert!(!rbac::rule_allows(
        &json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"]}),
        &list
    ));
    let version = attrs(Method::GET, "/version");
    assert!(rbac::rule_allows(
        &json!({"verbs": ["get"], "nonResourceURLs": ["/version"]}),
        &version
    ));
    let v3 = attrs(Method::GET, "/openapi/v3/api/v1");
    assert!(rbac::rule_allows(
        &json!({"verbs": ["get"], "nonResourceURLs": ["/openapi/*"]}),
        &v3
    ));
    assert!(!rbac::rule_allows(
        &json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}),
        &v3
    ));
}

#[test]
fn forbidden_messages_read_as_kubernetes_writes_them() {
    let alice = User {
        name: "alice".into(),
        groups: vec![],
    };
    let e = forbidden(
        &alice,
        &attrs(Method::GET, "/api/v1/namespaces/default/pods"),
        "",
    );
    assert_eq!(e.code, StatusCode::FORBIDDEN);
    assert_eq!(
        e.message,
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    let e = forbidden(&alice, &attrs(Method::DELETE, "/api/v1/nodes/n1"), "");
    assert_eq!(
        e.message,
        "nodes \"n1\" is forbidden: User \"alice\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let e = forbidden(&alice, &attrs(Method::GET, "/version"), "");
    assert_eq!(
        e.message,
        "forbidden: User \"alice\" cannot get path \"/version\""
    );
}

fn store(test: &str) -> (Store, std::path::PathBuf) {
    let d = std::env::temp_dir().join(format!("skiff-authz-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    (Store::open(&d).unwrap(), d)
}

fn put(s: &Store, key: &str, v: Value) {
    s.put(key, encode(&v), Precondition::None).unwrap();
}

fn node_user(n: &str) -> User {
    User {
        name: format!("system:node:{n}"),
        groups: vec!["system:nodes".into()],
    }
}

#[test]
fn a_node_reads_only_what_its_pods_use_and_writes_only_its_own() {
    let (s, dir) = store("node");
    put(
        &s,
        "/registry/core/pods/d/web",
        json!({"metadata": {"name": "web", "namespace": "d"},
        "spec": {"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "tls"}}],
                 "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}}),
    );
    put(
        &s,
        "/registry/core/pods/d/other",
        json!({"metadata": {"name": "other", "namespace": "d"},
        "spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "db"}}], "containers": []}}),
    );
    bootstrap::ensure(&s).unwrap();
    let n1 = node_user("n1");
    let may = |m: Method, p: &str| authorize(&s, &n1, &attrs(m, p)).unwrap();
    // (method, path, allowed)
    let rows = [
        (Method::GET, "/api/v1/namespaces/d/secrets/tls", true),
        (Method::GET, "/api/v1/namespaces/d/configmaps/cfg", true),
        (Method::GET, "/api/v1/namespaces/d/secrets/db", false),
        (Method::GET, "/api/v1/namespaces/d/secrets", false),
        (Method::PATCH, "/api/v1/namespaces/d/pods/web/status", true),
        (
            Method::PATCH,
            "/api/v1/namespaces/d/pods/other/status",
            false,
        ),
        (Method::DELETE, "/api/v1/namespaces/d/pods/other", false),
        (Method::POST, "/api/v1/namespaces/d/pods", false),
        (Method::PATCH, "/api/v1/nodes/n1/status", true),
        (Method::PATCH, "/api/v1/nodes/n2/status", false),
        (Method::DELETE, "/api/v1/nodes/n2", false),
        (Method::GET, "/api/v1/nodes", true),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
            true,
        ),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2",
            false,
        ),
        (Method::POST, "/api/v1/namespaces/d/events", true),
        (
            Method::GET,
            "/apis/discovery.k8s.io/v1/endpointslices",
            true,
        ),
        (Method::GET, "/api/v1/namespaces/d/pods/web/exec", false),
        (Method::GET, "/version", true),
    ];
    for (m, p, allowed) in rows {
        let d = may(m.clone(), p);
        assert_eq!(d.allowed, allowed, "{m} {p}: {d:?}");
    }
    // NodeRestriction: creates name the node itself.
    let create_node = attrs(Method::POST, "/api/v1/nodes");
    assert!(node::restrict_create(&n1, &create_node, br#"{"metadata":{"name":"n1"}}"#).is_ok());
    assert_eq!(
        node::restrict_create(&n1, &create_node, br#"{"metadata":{"name":"n2"}}"#),
        Err("node \"n1\" is not allowed to modify node \"n2\"".into())
    );
    let lease = attrs(
        Method::POST,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
    );
    assert!(node::restrict_create(&n1, &lease, br#"{"metadata":{"name":"n2"}}"#).is_err());
    let d = may(Method::GET, "/api/v1/namespaces/d/secrets/db");
    assert_eq!(
        d.reason,
        "no relationship found between node 'n1' and this object"
    );
    // Without the group, the name alone is not a node.
    let pretender = User {
        name: "system:node:n1".into(),
        groups: vec![],
    };
    assert!(
        !authorize(
            &s,
            &pretender,
            &attrs(Method::GET, "/api/v1/namespaces/d/secrets/tls")
        )
        .unwrap()
        .allowed
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rbac_grants_through_bindings_and_only_there() {
    let (s, dir) = store("rbac");
    bootstrap::ensure(&s).unwrap();
    let alice = User {
        name: "alice".into(),
        groups: vec!["devs".into()],
    };
    let may = |m: Method, p: &str| authorize(&s, &alice, &attrs(m, p)).unwrap().allowed;
    assert!(!may(Method::GET, "/api/v1/namespaces/team/pods"));
    assert!(
        may(Method::GET, "/apis"),
        "discovery for every authenticated user"
    );
    assert!(may(
        Method::POST,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    ));
    // view in namespace team, for group devs.
    put(
        &s,
        "/registry/rbac.authorization.k8s.io/rolebindings/team/devs-view",
        json!({
        "metadata": {"name": "devs-view", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "devs"}]}),
    );
    assert!(may(Method::GET, "/api/v1/namespaces/team/pods"));
    assert!(
        !may(Method::GET, "/api/v1/namespaces/team/secrets/x"),
        "view reads no secrets"
    );
    assert!(!may(Method::POST, "/api/v1/namespaces/team/pods"));
    assert!(
        !may(Method::GET, "/api/v1/namespaces/other/pods"),
        "only in its namespace"
    );
    assert!(!may(Method::GET, "/api/v1/pods"), "nor across namespaces");
    // A Role of the namespace, for the user by name.
    put(
        &s,
        "/registry/rbac.authorization.k8s.io/roles/team/scaler",
        json!({
        "metadata": {"name": "scaler", "namespace": "team"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"], "resourceNames": ["web"]}]}),
    );
    put(
        &s,
        "/registry/rbac.authorization.k8s.io/rolebindings/team/alice-scales",
        json!({
        "metadata": {"name": "alice-scales", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scaler"},
        "subjects": [{"kind": "User", "name": "alice"}]}),
    );
    assert!(may(
        Method::PATCH,
        "/apis/apps/v1/namespaces/team/deployments/web/scale"
    ));
    assert!(!may(
        Method::PATCH,
        "/apis/apps/v1/namespaces/team/deployments/db/scale"
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rbac_writes_grant_no_more_than_the_writer_holds() {
    let (s, dir) = store("escalation");
    bootstrap::ensure(&s).unwrap();
    let alice = User {
        name: "alice".into(),
        groups: vec![],
    };
    // alice administers namespace team.
    put(
        &s,
        "/registry/rbac.authorization.k8s.io/rolebindings/team/alice-admin",
        json!({
        "metadata": {"name": "alice-admin", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "alice"}]}),
    );
    let check = |path: &str, body: Value| {
        let a = attrs(Method::POST, path);
        assert!(
            authorize(&s, &alice, &a).unwrap().allowed,
            "{path} is alice's to write"
        );
        escalation::check(&s, &alice, &a, body.to_string().as_bytes()).unwrap()
    };
    let binding = |role: &str| {
        json!({"metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": "bob"}]})
    };
    let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings";
    assert!(
        check(bindings, binding("view")).allowed,
        "she holds view's rules"
    );
    let d = check(bindings, binding("cluster-admin"));
    assert!(!d.allowed);
    assert!(
        d.reason
            .contains("attempting to grant RBAC permissions not currently held"),
        "{}",
        d.reason
    );
    let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles";
    let role = |rules: Value| json!({"metadata": {"name": "r"}, "rules": rules});
    assert!(
        check(
            roles,
            role(json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]))
        )
        .allowed
    );
    assert!(
        !check(
            roles,
            role(json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]))
        )
        .allowed
    );
    assert!(
        !check(
            roles,
            role(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]))
        )
        .allowed,
        "a wildcard is held only by a wildcard"
    );
    // A patch cannot be judged by its result here: it needs escalate.
    let patch = attrs(
        Method::PATCH,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles/r",
    );
    assert!(
        !escalation::check(&s, &alice, &patch, b"{}")
            .unwrap()
            .allowed
    );
    // The bind verb on a role lets her bind it without holding it.
    put(
        &s,
        "/registry/rbac.authorization.k8s.io/roles/team/binder",
        json!({
        "metadata": {"name": "binder", "namespace": "team"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]}]}),
    );
    put(
        &s,
        "/registry/rbac.authorization.k8s.io/rolebindings/team/alice-binder",
        json!({
        "metadata": {"name": "alice-binder", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "binder"},
        "subjects": [{"kind": "User", "name": "alice"}]}),
    );
    assert!(check(bindings, binding("cluster-admin")).allowed);
    let _ = std::fs::remove_dir_all(dir);
}
