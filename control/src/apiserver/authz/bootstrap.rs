//! The roles every cluster starts with (kube-apiserver's RBAC bootstrap policy, reduced
//! to the kinds served here), created when absent and left alone after, so an admin
//! may change them: cluster-admin for system:masters; discovery, health and
//! self-reviews for every authenticated user; admin, edit and view to bind in
//! namespaces; the proxy's role for system:kube-proxy.

use crate::apiserver::objects::{encode, now_rfc3339, uid};
use crate::store::{Precondition, Store, StoreError};
use serde_json::{json, Value};

const GROUP: &str = "rbac.authorization.k8s.io";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// What `view` may read (no Secrets, as Kubernetes' view role).
fn viewable() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "services/status",
                "endpoints",
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "serviceaccounts",
                "namespaces",
                "namespaces/status",
                "resourcequotas",
                "limitranges",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "controllerrevisions",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(&["events.k8s.io"], &["events"], READ),
        rule(&["coordination.k8s.io"], &["leases"], READ),
    ]
}

/// What `edit` may change besides reading (Secrets included; roles not).
fn editable() -> Vec<Value> {
    let mut all: Vec<&str> = WRITE.to_vec();
    all.extend(READ);
    vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/exec",
                "pods/attach",
                "pods/portforward",
                "pods/eviction",
                "services",
                "endpoints",
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "serviceaccounts",
            ],
            &all,
        ),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
            ],
            &all,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], &all),
        rule(&["discovery.k8s.io"], &["endpointslices"], &all),
        rule(&["coordination.k8s.io"], &["leases"], &all),
    ]
}

fn cluster_roles() -> Vec<(&'static str, Vec<Value>)> {
    let view = viewable();
    let mut edit = view.clone();
    edit.extend(editable());
    let mut admin = edit.clone();
    let mut all: Vec<&str> = WRITE.to_vec();
    all.extend(READ);
    admin.push(rule(&[GROUP], &["roles", "rolebindings"], &all));
    admin.push(rule(
        &["authorization.k8s.io"],
        &["localsubjectaccessreviews"],
        &["create"],
    ));
    vec![
        (
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        ("admin", admin),
        ("edit", edit),
        ("view", view),
        (
            "system:discovery",
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        (
            "system:public-info-viewer",
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        (
            "system:basic-user",
            vec![
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
            ],
        ),
        (
            // What a joining node (a bootstrap token) or a node renewing its
            // certificates may do: ask, and read its request back.
            "system:node-bootstrapper",
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        (
            "system:node-proxier",
            vec![
                rule(&[""], &["services", "endpoints", "nodes"], READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "update", "patch", "get"],
                ),
            ],
        ),
    ]
}

fn cluster_role_bindings() -> Vec<(&'static str, &'static str, Value)> {
    let group = |g: &str| json!([{"apiGroup": GROUP, "kind": "Group", "name": g}]);
    let user = |u: &str| json!([{"apiGroup": GROUP, "kind": "User", "name": u}]);
    vec![
        ("cluster-admin", "cluster-admin", group("system:masters")),
        (
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            group("system:bootstrappers"),
        ),
        (
            "skiff:node-certificates",
            "system:node-bootstrapper",
            group("system:nodes"),
        ),
        (
            "system:discovery",
            "system:discovery",
            group("system:authenticated"),
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            group("system:authenticated"),
        ),
        (
            "system:basic-user",
            "system:basic-user",
            group("system:authenticated"),
        ),
        (
            "system:node-proxier",
            "system:node-proxier",
            user("system:kube-proxy"),
        ),
    ]
}

fn meta(name: &str) -> Value {
    json!({"name": name, "uid": uid(), "creationTimestamp": now_rfc3339(),
           "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
           "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn put_absent(store: &Store, key: String, v: &Value) -> Result<(), StoreError> {
    match store.put(&key, encode(v), Precondition::Absent) {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the bootstrap roles and bindings that do not exist yet.
pub fn ensure(store: &Store) -> Result<(), StoreError> {
    for (name, rules) in cluster_roles() {
        let v = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole",
                       "metadata": meta(name), "rules": rules});
        put_absent(store, format!("/registry/{GROUP}/clusterroles/{name}"), &v)?;
    }
    for (name, role, subjects) in cluster_role_bindings() {
        let v = json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRoleBinding",
                       "metadata": meta(name),
                       "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
                       "subjects": subjects});
        put_absent(
            store,
            format!("/registry/{GROUP}/clusterrolebindings/{name}"),
            &v,
        )?;
    }
    Ok(())
}
