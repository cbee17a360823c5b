//! Strategic merge patch (application/strategic-merge-patch+json), as kubectl apply and
//! kubectl edit/patch send it: objects merge recursively, `null` deletes, and lists of
//! the Kubernetes types merge element by element on their merge key (containers by name,
//! container ports by containerPort, …) instead of being replaced. Directives:
//! `$patch: replace|delete|merge`, `$setElementOrder/<list>`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<list>`.
//!
//! The merge keys are those of the API's `patchMergeKey` tags, by field name (with the
//! one ambiguity, `ports`, told apart by the elements' fields).

use serde_json::{Map, Value};

/// How a list field merges.
enum ListKind {
    /// Elements are objects matched on this key.
    Keyed(&'static str),
    /// A list of scalars merged as a set (e.g. metadata.finalizers).
    PrimitiveSet,
    /// Replaced as a whole (no patch strategy).
    Atomic,
}

fn list_kind(field: &str, sample: &[&Value]) -> ListKind {
    let has = |k: &str| sample.iter().any(|e| e.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => ListKind::Keyed("name"),
        "volumeMounts" => ListKind::Keyed("mountPath"),
        "volumeDevices" => ListKind::Keyed("devicePath"),
        "hostAliases" => ListKind::Keyed("ip"),
        "ownerReferences" => ListKind::Keyed("uid"),
        "conditions" => ListKind::Keyed("type"),
        "readinessGates" => ListKind::Keyed("conditionType"),
        "ports" if has("containerPort") => ListKind::Keyed("containerPort"),
        "ports" if has("port") => ListKind::Keyed("port"),
        "finalizers" => ListKind::PrimitiveSet,
        _ => ListKind::Atomic,
    }
}

/// The merge key of a list field's items, if it merges by key.
pub(crate) fn merge_key(field: &str, sample: &[&Value]) -> Option<&'static str> {
    match list_kind(field, sample) {
        ListKind::Keyed(k) => Some(k),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid strategic merge patch: {0}")]
    Invalid(String),
}

/// Apply `patch` to `doc`.
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Invalid(
            "the patch must be a JSON object".into(),
        ));
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    merge_object(doc.as_object_mut().expect("object"), p)
}

fn merge_object(
    doc: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = patch
                .iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect();
            return Ok(());
        }
        Some("delete") => {
            doc.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::Invalid(format!("unknown $patch {other:?}"))),
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                doc.remove(k);
            }
            Value::Object(po) => {
                if po.get("$patch").and_then(Value::as_str) == Some("delete") {
                    doc.remove(k);
                    continue;
                }
                let cur = doc.entry(k.clone()).or_insert(Value::Null);
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                merge_object(cur.as_object_mut().expect("object"), po)?;
            }
            Value::Array(pa) => {
                let cur = doc.remove(k).unwrap_or(Value::Null);
                let merged = merge_list(k, cur, pa)?;
                doc.insert(k.clone(), merged);
            }
            other => {
                doc.insert(k.clone(), other.clone());
            }
        }
    }
    // Directives that act on the merged result.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone: Vec<&Value> = v.as_array().into_iter().flatten().collect();
            if let Some(Value::Array(a)) = doc.get_mut(field) {
                a.retain(|x| !gone.contains(&x));
            }
        }
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order: Vec<&Value> = v.as_array().into_iter().flatten().collect();
            if let Some(Value::Array(a)) = doc.get_mut(field) {
                reorder(field, a, &order);
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        doc.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

/// A patch value without directives (for replaced parts).
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

fn merge_list(field: &str, cur: Value, patch: &[Value]) -> Result<Value, PatchError> {
    // A `{"$patch": "replace"}` element: the rest of the patch list is the new list.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            patch
                .iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip)
                .collect(),
        ));
    }
    let mut cur = match cur {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    let sample: Vec<&Value> = cur.iter().chain(patch.iter()).collect();
    match list_kind(field, &sample) {
        ListKind::Atomic => Ok(Value::Array(patch.iter().map(strip).collect())),
        ListKind::PrimitiveSet => {
            for p in patch {
                if !cur.contains(p) {
                    cur.push(p.clone());
                }
            }
            Ok(Value::Array(cur))
        }
        ListKind::Keyed(key) => {
            for p in patch {
                let Some(kv) = p.get(key) else {
                    return Err(PatchError::Invalid(format!(
                        "an element of {field} has no merge key {key:?}: {p}"
                    )));
                };
                let pos = cur.iter().position(|e| e.get(key) == Some(kv));
                let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        cur.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let p = p.as_object().expect("has a key, so an object");
                        if !cur[i].is_object() {
                            cur[i] = Value::Object(Map::new());
                        }
                        merge_object(cur[i].as_object_mut().expect("object"), p)?;
                    }
                    (None, false) => cur.push(strip(p)),
                }
            }
            Ok(Value::Array(cur))
        }
    }
}

/// Order `list` as `order` says (elements named there first, in that order; the rest after).
fn reorder(field: &str, list: &mut Vec<Value>, order: &[&Value]) {
    let key = {
        let sample: Vec<&Value> = list.iter().collect();
        match list_kind(field, &sample) {
            ListKind::Keyed(k) => Some(k),
            _ => None,
        }
    };
    let key_of = |e: &Value| -> Value {
        match key {
            Some(k) => e.get(k).cloned().unwrap_or(Value::Null),
            None => e.clone(),
        }
    };
    let keyed: Vec<Value> = order.iter().map(|o| key_of(o)).collect();
    let mut items: Vec<(usize, Value)> = std::mem::take(list)
        .into_iter()
        .map(|e| {
            let k = key_of(&e);
            let rank = keyed.iter().position(|x| *x == k).unwrap_or(usize::MAX);
            (rank, e)
        })
        .collect();
    items.sort_by_key(|(r, _)| *r); // stable: unranked keep their order at the end
    *list = items.into_iter().map(|(_, e)| e).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(doc: Value, p: Value) -> Value {
        let mut d = doc;
        apply(&mut d, &p).unwrap();
        d
    }

    #[test]
    fn containers_merge_by_name_and_keep_other_fields() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "busybox"}
        ]}}}});
        // What kubectl apply sends when only the image and one env var change.
        let p = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"name": "web", "image": "nginx:2",
                "$setElementOrder/env": [{"name": "A"}],
                "env": [{"$patch": "delete", "name": "B"}]}]
        }}}});
        let out = patched(doc, p);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(
            cs[0]["ports"][0]["containerPort"], 80,
            "untouched fields stay"
        );
        assert_eq!(cs[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(cs[1], json!({"name": "sidecar", "image": "busybox"}));
    }

    #[test]
    fn directives_null_replace_and_order() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
                     "selector": {"app": "web", "tier": "fe"}}});
        let p = json!({"metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y"]},
            "spec": {"ports": [{"port": 8080, "name": "alt"}],
                     "$setElementOrder/ports": [{"port": 8080}, {"port": 443}, {"port": 80}],
                     "selector": {"$patch": "replace", "app": "api"}}});
        let out = patched(doc, p);
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let ports: Vec<i64> = out["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [8080, 443, 80]);
        assert_eq!(out["spec"]["selector"], json!({"app": "api"}));
        // A list without a patch strategy is replaced; deleteFromPrimitiveList removes.
        let out = patched(
            json!({"spec": {"args": ["a", "b"], "finalizers": ["f1", "f2"]}}),
            json!({"spec": {"args": ["c"], "$deleteFromPrimitiveList/finalizers": ["f1"]}}),
        );
        assert_eq!(out, json!({"spec": {"args": ["c"], "finalizers": ["f2"]}}));
        // Elements of keyed lists need their key.
        let mut d = json!({});
        assert!(apply(&mut d, &json!({"containers": [{"image": "x"}]})).is_err());
    }
}
