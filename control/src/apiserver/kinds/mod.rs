//! One place per served kind, as kube-apiserver keeps `pkg/registry/<group>/<kind>/
//! strategy.go`: each file says what the server does to objects of its kind — the
//! defaults it fills, its Kubernetes type (unknown fields, wrong types), its own
//! validation, what an update may not change, what a create reserves, its `kubectl get`
//! columns, its protobuf and OpenAPI forms, whether it scales. The write path
//! (`objects.rs`), the printer (`table.rs`), discovery and `kubectl explain` ask the
//! kind's [`Strategy`] instead of matching on kind names. Adding a kind is a file here,
//! a line in [`of`] and its URL names in `resources.rs`.

mod access_review;
mod configmap;
pub mod cronjob;
pub mod csr;
mod daemonset;
mod deployment;
mod endpoints;
mod endpointslice;
mod event;
pub mod job;
mod lease;
mod namespace;
mod node;
mod pod;
mod rbac;
mod replicaset;
mod secret;
mod service;
mod serviceaccount;
pub mod statefulset;

use super::protobuf::Field;
use super::status::ApiError;
use super::table::{age, c, Col};
use crate::store::Store;
use schemars::SchemaGenerator;
use serde_json::{json, Value};
use std::time::SystemTime;

/// What the API server does to objects of one kind. Every method has the behaviour of
/// a kind with nothing special about it.
pub trait Strategy: Sync {
    /// Fill the fields a client left out (what `kubectl get -o yaml` shows).
    fn defaults(&self, _v: &mut Value) {}

    /// The object through its Kubernetes type and back: None for a kind served
    /// untyped; an error names the field of the wrong type.
    fn typed(&self, _v: &Value) -> Option<serde_json::Result<Value>> {
        None
    }

    /// The kind's rules beyond its type, on the defaulted object.
    fn validate(&self, _v: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// On create, once the object has its uid and name (kube's PrepareForCreate).
    fn prepare_for_create(&self, _v: &mut Value) {}

    /// On create, who asked for it (a CertificateSigningRequest records its requester,
    /// which approval judges).
    fn record_requester(&self, _v: &mut Value, _user: &super::tls::User) {}

    /// What a create of the object at `key` reserves (a Service's ClusterIP and node
    /// ports): the reservations' keys, released if the create fails.
    fn reserve(&self, _store: &Store, _v: &mut Value, _key: &str) -> Result<Vec<String>, ApiError> {
        Ok(Vec::new())
    }

    /// What an update may not change (`cur` is stored, `next` defaulted).
    fn immutable(&self, _cur: &Value, _next: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// The `kubectl get` columns with their cells for `o` (Null: the headers alone).
    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Age", age(o, now)),
        ]
    }

    /// The protobuf form of a body (the kinds kubectl sends that way), as fields.
    fn protobuf(&self) -> Option<&'static [Field]> {
        None
    }

    /// Add the kind's OpenAPI schema (`kubectl explain`); its component name.
    fn schema(&self, _gen: &mut SchemaGenerator) -> Option<String> {
        None
    }

    /// Whether it has a status subresource: a spec update keeps the stored status and a
    /// status update keeps the rest (kube's PrepareForUpdate of such kinds).
    fn has_status(&self) -> bool {
        false
    }

    /// Whether it has a scale subresource (autoscaling/v1 Scale: `kubectl scale`).
    fn scalable(&self) -> bool {
        false
    }
}

/// A kind with nothing special about it.
struct Plain;

impl Strategy for Plain {}

/// The strategy of `kind` (a kind not listed has nothing special about it).
pub fn of(kind: &str) -> &'static dyn Strategy {
    lookup(kind).unwrap_or(&Plain)
}

fn lookup(kind: &str) -> Option<&'static dyn Strategy> {
    Some(match kind {
        "Namespace" => &namespace::Namespace,
        "Node" => &node::Node,
        "Pod" => &pod::Pod,
        "Service" => &service::Service,
        "Endpoints" => &endpoints::Endpoints,
        "ConfigMap" => &configmap::ConfigMap,
        "Secret" => &secret::Secret,
        "Event" => &event::Event,
        "ServiceAccount" => &serviceaccount::ServiceAccount,
        "Deployment" => &deployment::Deployment,
        "ReplicaSet" => &replicaset::ReplicaSet,
        "DaemonSet" => &daemonset::DaemonSet,
        "StatefulSet" => &statefulset::StatefulSet,
        "Job" => &job::Job,
        "CronJob" => &cronjob::CronJob,
        "EndpointSlice" => &endpointslice::EndpointSlice,
        "Lease" => &lease::Lease,
        "Role" => &rbac::Role,
        "ClusterRole" => &rbac::ClusterRole,
        "RoleBinding" => &rbac::RoleBinding,
        "ClusterRoleBinding" => &rbac::ClusterRoleBinding,
        "SelfSubjectAccessReview" => &access_review::SelfSubjectAccessReview,
        "CertificateSigningRequest" => &csr::CertificateSigningRequest,
        _ => return None,
    })
}

/// `typed` and `schema` of a kind served as Kubernetes type `$t`.
macro_rules! typed_as {
    ($t:ty) => {
        fn typed(&self, v: &serde_json::Value) -> Option<serde_json::Result<serde_json::Value>> {
            Some(serde_json::from_value::<$t>(v.clone()).and_then(|t| serde_json::to_value(t)))
        }

        fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Option<String> {
            gen.subschema_for::<$t>();
            Some(<$t as schemars::JsonSchema>::schema_name().into_owned())
        }
    };
}
pub(crate) use typed_as;

/// Set `path` in `v` to `default` when it is absent (objects on the way are made).
pub(crate) fn set_default(v: &mut Value, path: &[&str], default: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    let last = path[path.len() - 1];
    if cur[last].is_null() {
        cur[last] = default;
    }
}

/// Whether the value at `path` differs between two objects.
pub(crate) fn changed(a: &Value, b: &Value, path: &[&str]) -> bool {
    let get = |v: &Value| {
        path.iter()
            .try_fold(v, |v, k| v.get(*k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    get(a) != get(b)
}

/// Kubernetes' Invalid error for one field.
pub(crate) fn invalid(kind: &str, name: &str, field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(
        kind,
        name,
        &format!("{field}: Invalid value: {value}: {why}"),
    )
}

/// The selector of a workload may not change (apps/v1).
pub(crate) fn immutable_selector(kind: &str, cur: &Value, next: &Value) -> Result<(), ApiError> {
    if changed(cur, next, &["spec", "selector"]) {
        let name = cur["metadata"]["name"].as_str().unwrap_or("");
        return Err(invalid(
            kind,
            name,
            "spec.selector",
            &next["spec"]["selector"],
            "field is immutable",
        ));
    }
    Ok(())
}

/// ConfigMap and Secret data: at most 1 MiB in all (kube's validation; etcd's value
/// limit is not far above). `path` is the field kube names in the error.
pub(crate) fn check_data_size(
    kind: &str,
    v: &Value,
    total: usize,
    path: &str,
) -> Result<(), ApiError> {
    const MAX: usize = 1 << 20;
    if total > MAX {
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        return Err(ApiError::invalid(
            kind,
            name,
            &format!("{path}: Too long: must have at most {MAX} bytes"),
        ));
    }
    Ok(())
}

/// The bytes of a map of strings (`base64`: decoded size).
pub(crate) fn data_bytes(map: &Value, base64: bool) -> usize {
    map.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, x)| x.as_str())
        .map(|s| {
            if base64 {
                s.trim_end_matches('=').len() * 3 / 4
            } else {
                s.len()
            }
        })
        .sum()
}

/// A ConfigMap or Secret marked `immutable` keeps its data and the mark.
pub(crate) fn immutable_data(
    kind: &str,
    cur: &Value,
    next: &Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    if cur["immutable"] == true
        && (fields.iter().any(|f| changed(cur, next, &[f])) || next["immutable"] != true)
    {
        let name = cur["metadata"]["name"].as_str().unwrap_or("");
        return Err(ApiError::invalid(
            kind,
            name,
            "data: Forbidden: field is immutable when `immutable` is set",
        ));
    }
    Ok(())
}

/// The columns of a pod-template workload: name, the kind's own counts, age, then its
/// containers, images and selector with `-o wide`.
pub(crate) fn workload_columns(o: &Value, now: SystemTime, counts: Vec<Col>) -> Vec<Col> {
    use super::table::{containers_and_images, pairs, w};
    let spec = &o["spec"];
    let (cs, images) = containers_and_images(&spec["template"]["spec"]);
    let mut cols = vec![c("Name", o["metadata"]["name"].clone())];
    cols.extend(counts);
    cols.extend([
        c("Age", age(o, now)),
        w("Containers", cs),
        w("Images", images),
        w("Selector", pairs(&spec["selector"]["matchLabels"])),
    ]);
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_defaults_keep_what_is_set() {
        let mut d = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        of("Deployment").defaults(&mut d);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert!(d["spec"]["strategy"]["rollingUpdate"].is_null());
        let mut ds = json!({"spec": {}});
        of("DaemonSet").defaults(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
    }

    #[test]
    fn selectors_pods_and_immutable_configmaps() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "replicas": 1}});
        let mut d2 = d.clone();
        d2["spec"]["replicas"] = json!(3);
        assert!(of("Deployment").immutable(&d, &d2).is_ok());
        d2["spec"]["selector"]["matchLabels"]["app"] = json!("api");
        let e = of("Deployment").immutable(&d, &d2).unwrap_err();
        assert!(
            e.message.contains("spec.selector") && e.message.contains("immutable"),
            "{}",
            e.message
        );

        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a", "ports": []}]}});
        let mut p2 = p.clone();
        p2["spec"]["containers"][0]["image"] = json!("b");
        p2["spec"]["nodeName"] = json!("n1");
        let pod = of("Pod");
        assert!(pod.immutable(&p, &p2).is_ok(), "image and a first binding");
        let mut p3 = p2.clone();
        p3["spec"]["containers"][0]["name"] = json!("d");
        assert!(pod.immutable(&p2, &p3).is_err());
        let mut p4 = p2.clone();
        p4["spec"]["nodeName"] = json!("n2");
        assert!(pod.immutable(&p2, &p4).is_err(), "no rebinding");

        let cm = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let mut cm2 = cm.clone();
        cm2["data"]["a"] = json!("2");
        assert!(of("ConfigMap").immutable(&cm, &cm2).is_err());
    }

    #[test]
    fn every_served_kind_has_its_strategy() {
        for r in super::super::resources::RESOURCES {
            let s = lookup(r.kind).unwrap_or_else(|| panic!("{} has no strategy", r.kind));
            assert!(
                s.typed(&json!({"metadata": {"name": "x"}})).is_some(),
                "{} is served through its Kubernetes type",
                r.kind
            );
        }
    }
}
