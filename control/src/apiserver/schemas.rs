//! The served kinds' OpenAPI v3 schemas (what `kubectl explain` reads), generated from
//! k8s-openapi's types in the shape kube-apiserver publishes them: components named
//! `io.k8s.api.core.v1.Pod`, references as `allOf: [{$ref}]` beside the field's
//! description, and `x-kubernetes-group-version-kind` on each kind's schema.
//!
//! No patch operation here advertises strategic merge patch, so kubectl's client-side
//! apply keeps its compiled-in patch strategies rather than reading these schemas
//! (which lack the `x-kubernetes-patch-*` extensions).

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// kube-apiserver's form of a reference with siblings: `{allOf: [{$ref}], …}`.
fn kube_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() > 1 {
                if let Some(r) = m.remove("$ref") {
                    m.insert("allOf".into(), json!([{ "$ref": r }]));
                }
            }
            for x in m.values_mut() {
                kube_refs(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(kube_refs),
        _ => {}
    }
}

fn build(group: &str, version: &str, kinds: &[&str]) -> Map<String, Value> {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let mut named = Vec::new();
    for k in kinds {
        if let Some(name) = super::kinds::of(k).schema(&mut gen) {
            named.push((name, k.to_string()));
        }
    }
    let mut schemas: Map<String, Value> = gen.take_definitions(true).into_iter().collect();
    for v in schemas.values_mut() {
        kube_refs(v);
    }
    for (name, kind) in named {
        if let Some(s) = schemas.get_mut(&name) {
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "kind": kind, "version": version}]);
        }
    }
    schemas
}

/// The components.schemas of one group-version document (cached: they never change).
pub fn for_group_version(group: &str, version: &str, kinds: &[&str]) -> Map<String, Value> {
    static CACHE: OnceLock<std::sync::Mutex<HashMap<String, Map<String, Value>>>> = OnceLock::new();
    let key = format!("{group}/{version}");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().unwrap().get(&key) {
        return s.clone();
    }
    let s = build(group, version, kinds);
    cache.lock().unwrap().insert(key, s.clone());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_described_as_kube_apiserver_publishes_them() {
        let s = for_group_version("", "v1", &["Pod", "ConfigMap"]);
        let pod = &s["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(pod["description"]
            .as_str()
            .unwrap()
            .starts_with("Pod is a collection of containers"));
        // A described reference: allOf with the $ref, the description beside it.
        let spec = &pod["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        assert!(spec["description"].is_string());
        // Everything referenced is there.
        let text = Value::Object(s.clone()).to_string();
        for r in text.split("#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(s.contains_key(name), "{name} is referenced but missing");
        }
        let containers = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert!(s.contains_key("io.k8s.api.core.v1.ConfigMap"));
    }
}
