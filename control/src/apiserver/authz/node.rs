//! The Node authorizer: a kubelet's credentials (user `system:node:NAME`, group
//! system:nodes) may read what any node reads (nodes, pods, services, endpoints), write
//! only its own Node, Lease and the status of pods bound to it, post events, and read a
//! Secret, ConfigMap or PersistentVolumeClaim only when a pod bound to it uses it. A
//! node that is taken over cannot read the rest of the cluster's secrets.

use super::{Attributes, Decision};
use crate::apiserver::objects::decode;
use crate::apiserver::tls::User;
use crate::store::{Store, StoreError};
use serde_json::Value;

/// The node a user is, if its credentials are a node's.
pub fn node_of(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (user.groups.iter().any(|g| g == "system:nodes") && !name.is_empty()).then_some(name)
}

const READ: &[&str] = &["get", "list", "watch"];

/// Some(decision) for a node's request; None for any other user (or a request the
/// node authorizer has no opinion on: the RBAC roles decide).
pub fn authorize(
    store: &Store,
    user: &User,
    a: &Attributes,
) -> Result<Option<Decision>, StoreError> {
    let Some(node) = node_of(user) else {
        return Ok(None);
    };
    if a.path.is_some() {
        return Ok(None);
    }
    let verb = a.verb.as_str();
    let read = READ.contains(&verb);
    let own = a.name == node;
    let allow = |why: &str| Ok(Some(Decision::allow(why)));
    let no_relation = || {
        Ok(Some(Decision::deny(format!(
            "no relationship found between node '{node}' and this object"
        ))))
    };
    match (
        a.group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        ("", "nodes", "") if read => allow("nodes are readable by every node"),
        ("", "nodes", "" | "status") if own || (verb == "create" && a.name.is_empty()) => {
            // A create names its node in the body; NodeRestriction would check it.
            allow("a node manages its own Node")
        }
        ("", "pods", "") if read => allow("pods are readable by every node"),
        ("", "pods", "status") if matches!(verb, "update" | "patch") => {
            if bound_here(store, &a.namespace, &a.name, node)? {
                allow("the pod is bound to this node")
            } else {
                no_relation()
            }
        }
        ("", "pods", "") if verb == "delete" => {
            if bound_here(store, &a.namespace, &a.name, node)? {
                allow("the pod is bound to this node")
            } else {
                no_relation()
            }
        }
        ("" | "events.k8s.io", "events", "")
            if read || matches!(verb, "create" | "update" | "patch") =>
        {
            allow("nodes post events")
        }
        ("coordination.k8s.io", "leases", "") if a.namespace == "kube-node-lease" => {
            if own || (verb == "create" && a.name.is_empty()) {
                allow("a node keeps its own Lease")
            } else {
                no_relation()
            }
        }
        ("", "services" | "endpoints", "") | ("discovery.k8s.io", "endpointslices", "") if read => {
            allow("services and their endpoints are readable by every node")
        }
        ("", kind @ ("secrets" | "configmaps" | "persistentvolumeclaims"), "") => {
            if verb == "get" && used_here(store, &a.namespace, kind, &a.name, node)? {
                allow("a pod bound to this node uses it")
            } else {
                no_relation()
            }
        }
        _ => Ok(None),
    }
}

fn pod(store: &Store, ns: &str, name: &str) -> Result<Option<Value>, StoreError> {
    Ok(store
        .get(&format!("/registry/core/pods/{ns}/{name}"))?
        .map(|kv| decode(&kv)))
}

fn bound_here(store: &Store, ns: &str, name: &str, node: &str) -> Result<bool, StoreError> {
    Ok(pod(store, ns, name)?.is_some_and(|p| p["spec"]["nodeName"] == node))
}

/// Whether a pod bound to `node` in `ns` refers to the object (volumes, env, envFrom,
/// projected sources, image pull secrets).
fn used_here(
    store: &Store,
    ns: &str,
    kind: &str,
    name: &str,
    node: &str,
) -> Result<bool, StoreError> {
    let pods = store.list(&format!("/registry/core/pods/{ns}/"))?.0;
    Ok(pods
        .iter()
        .map(decode)
        .filter(|p| p["spec"]["nodeName"] == node)
        .any(|p| references(&p["spec"], kind).iter().any(|n| n == name)))
}

/// The names of `kind` (secrets, configmaps, persistentvolumeclaims) a pod spec uses.
pub fn references(spec: &Value, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |v: &Value| {
        if let Some(s) = v.as_str() {
            out.push(s.to_string());
        }
    };
    let each = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for vol in each(&spec["volumes"]) {
        match kind {
            "secrets" => add(&vol["secret"]["secretName"]),
            "configmaps" => add(&vol["configMap"]["name"]),
            _ => add(&vol["persistentVolumeClaim"]["claimName"]),
        }
        for src in each(&vol["projected"]["sources"]) {
            match kind {
                "secrets" => add(&src["secret"]["name"]),
                "configmaps" => add(&src["configMap"]["name"]),
                _ => {}
            }
        }
    }
    if kind == "secrets" {
        for s in each(&spec["imagePullSecrets"]) {
            add(&s["name"]);
        }
    }
    let containers = each(&spec["containers"])
        .into_iter()
        .chain(each(&spec["initContainers"]))
        .chain(each(&spec["ephemeralContainers"]));
    for c in containers {
        for e in each(&c["env"]) {
            match kind {
                "secrets" => add(&e["valueFrom"]["secretKeyRef"]["name"]),
                "configmaps" => add(&e["valueFrom"]["configMapKeyRef"]["name"]),
                _ => {}
            }
        }
        for e in each(&c["envFrom"]) {
            match kind {
                "secrets" => add(&e["secretRef"]["name"]),
                "configmaps" => add(&e["configMapRef"]["name"]),
                _ => {}
            }
        }
    }
    out
}

/// NodeRestriction's check on what the authorizer cannot see, the body: a node creates
/// only its own Node, and only its own Lease. Err(reason) when the object is another's.
pub fn restrict_create(user: &User, a: &Attributes, body: &[u8]) -> Result<(), String> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let own = |what: &str| {
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| format!("node \"{node}\" must send {what} as JSON"))?;
        match v["metadata"]["name"].as_str() {
            Some(n) if n == node => Ok(()),
            n => Err(format!(
                "node \"{node}\" is not allowed to modify {what} \"{}\"",
                n.unwrap_or("")
            )),
        }
    };
    match (a.verb.as_str(), a.group.as_str(), a.resource.as_str()) {
        ("create", "", "nodes") => own("node"),
        ("create", "coordination.k8s.io", "leases") if a.namespace == "kube-node-lease" => {
            own("lease")
        }
        _ => Ok(()),
    }
}
