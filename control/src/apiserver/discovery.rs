//! /version, legacy discovery (/api, /apis, per group-version resource lists) and the
//! smallest /openapi/v3 that makes `kubectl apply` validate on the server: one path per
//! kind whose PATCH accepts `fieldValidation`.

use super::resources::{groups, Resource, RESOURCES};
use serde_json::{json, Value};

pub const K8S_VERSION: (&str, &str) = ("1", "32");

pub fn version() -> Value {
    json!({"major": K8S_VERSION.0, "minor": K8S_VERSION.1, "gitVersion": "v1.32.0-skiff", "gitCommit": "skiff", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64"})
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

pub fn api_groups() -> Value {
    let gs: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}], "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}}))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

fn resource_entry(r: &Resource) -> Value {
    json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": r.short})
}

/// APIResourceList of one group-version, or None if we serve nothing there.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(resource_entry)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rs}),
    )
}

/// The aggregated discovery version (v2, or v2beta1 for kubectl 1.26–1.29) an Accept
/// header asks for, in the client's order of preference; None for legacy discovery.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    accept.split(',').map(str::trim).find_map(|p| {
        let params: Vec<&str> = p.split(';').map(str::trim).collect();
        if !params.contains(&"as=APIGroupDiscoveryList")
            || !params.contains(&"g=apidiscovery.k8s.io")
        {
            return None;
        }
        if params.contains(&"v=v2") {
            Some("v2")
        } else if params.contains(&"v=v2beta1") {
            Some("v2beta1")
        } else {
            None
        }
    })
}

fn aggregated_resource(r: &Resource) -> Value {
    let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
    let mut subs = Vec::new();
    if super::kinds::of(r.kind).has_status() {
        subs.push(json!({"subresource": "status", "responseKind": kind(r.group, r.version, r.kind), "verbs": ["get", "patch", "update"]}));
    }
    if super::kinds::of(r.kind).scalable() {
        subs.push(json!({"subresource": "scale", "responseKind": kind("autoscaling", "v1", "Scale"), "verbs": ["get", "patch", "update"]}));
    }
    if r.kind == "Namespace" {
        subs.push(json!({"subresource": "finalize", "responseKind": kind("", "v1", "Namespace"), "verbs": ["update"]}));
    }
    if r.kind == "Pod" {
        subs.push(json!({"subresource": "binding", "responseKind": kind("", "v1", "Binding"), "verbs": ["create"]}));
    }
    let mut e = json!({
        "resource": r.plural, "responseKind": kind(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "subresources": subs,
    });
    if !r.short.is_empty() {
        e["shortNames"] = json!(r.short);
    }
    if matches!(
        r.kind,
        "Pod"
            | "Service"
            | "Deployment"
            | "ReplicaSet"
            | "DaemonSet"
            | "Job"
            | "CronJob"
            | "StatefulSet"
    ) {
        e["categories"] = json!(["all"]);
    }
    e
}

/// APIGroupDiscoveryList for /api (`core`) or /apis: every group, version and resource
/// in one response, so kubectl needs no per-group requests.
pub fn aggregated(core: bool, version: &str) -> Value {
    let mut items = Vec::new();
    let wanted: Vec<(&str, &str)> = if core { vec![("", "v1")] } else { groups() };
    for (g, v) in wanted {
        let resources: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.group == g && r.version == v)
            .map(aggregated_resource)
            .collect();
        let mut meta = json!({"creationTimestamp": null});
        if !g.is_empty() {
            meta["name"] = json!(g);
        }
        items.push(json!({"metadata": meta, "versions": [{"version": v, "resources": resources, "freshness": "Current"}]}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=skiff2"}),
    );
    for (g, v) in groups() {
        paths.insert(
            format!("apis/{g}/{v}"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash=skiff2")}),
        );
    }
    json!({"paths": paths})
}

/// The per group-version document: enough for kubectl to learn that the server validates.
pub fn openapi_gv(gv_path: &str) -> Option<Value> {
    let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
            "responses": {"200": {"description": "OK"}}
        });
        paths.insert(path, json!({"patch": op.clone(), "put": op}));
    }
    if paths.is_empty() {
        return None;
    }
    let kinds: Vec<&str> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| r.kind)
        .collect();
    let schemas = super::schemas::for_group_version(group, version, &kinds);
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}

/// A valid but schema-less OpenAPI v2 document in protobuf (gnostic openapi_v2.Document:
/// swagger = 1, info = 2 {title = 1, version = 2}). kubectl 1.27 and 1.28 validate `apply`
/// against /openapi/v2 only; with no schema for a kind they leave validation to the server.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 0x0a, b"Kubernetes");
    field(&mut info, 0x12, b"v1.32.0");
    let mut doc = Vec::new();
    field(&mut doc, 0x0a, b"2.0");
    field(&mut doc, 0x12, &info);
    doc
}
