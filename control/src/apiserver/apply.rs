//! Server-side apply (`kubectl apply --server-side`): each field manager owns the fields
//! of the configuration it applied, recorded in metadata.managedFields (FieldsV1 form:
//! `f:<field>`, `k:{<merge key>}` for list items, `.` for an item itself). Applying again
//! merges the new configuration (lists by merge key), removes fields the manager applied
//! before but no longer does (unless another manager owns them), and refuses to change a
//! field another manager owns with a different value (409 Conflict) unless forced.
//! Plain writes (create, update, patch, scale) are tracked too, as kube does: their
//! manager (`?fieldManager=`, else the client's user agent) takes the fields it changed
//! with operation "Update", and other managers lose them.

use super::status::ApiError;
use super::strategic;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

type Path = Vec<String>;

/// The merge key of a list's items, if the list merges by key.
fn list_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let refs: Vec<&Value> = items.iter().collect();
    strategic::merge_key(field, &refs)
}

/// FieldsV1 of an applied configuration.
pub fn fields_of(v: &Value) -> Value {
    let mut out = Map::new();
    let Some(obj) = v.as_object() else {
        return json!({});
    };
    for (k, x) in obj {
        if matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        let node = match x {
            Value::Object(_) => fields_of(x),
            Value::Array(items) => match list_key(k, items) {
                Some(key) => {
                    let mut m = Map::new();
                    for it in items {
                        let mut sub = fields_of(it);
                        sub[".".to_string()] = json!({});
                        m.insert(format!("k:{}", json!({key: it[key]})), sub);
                    }
                    Value::Object(m)
                }
                None => json!({}),
            },
            _ => json!({}),
        };
        out.insert(format!("f:{k}"), node);
    }
    Value::Object(out)
}

fn flatten(fv: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match fv.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, v) in m {
                prefix.push(k.clone());
                flatten(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn set_of(fv: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    flatten(fv, &mut Vec::new(), &mut out);
    out.retain(|p| !p.is_empty());
    out
}

fn unflatten(set: &BTreeSet<Path>) -> Value {
    let mut root = json!({});
    for p in set {
        let mut cur = &mut root;
        for seg in p {
            if cur.get(seg).is_none() {
                cur[seg.clone()] = json!({});
            }
            cur = &mut cur[seg.as_str()];
        }
    }
    root
}

/// The element of `arr` a `k:{…}` segment names.
fn find_item(arr: &[Value], seg: &str) -> Option<usize> {
    let key: Value = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    let (k, v) = key.as_object()?.iter().next()?;
    arr.iter().position(|e| e.get(k) == Some(v))
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else {
            let arr = cur.as_array()?;
            &arr[find_item(arr, seg)?]
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        // An item of a keyed list: remove it from its list.
        let Some((item, list_path)) = parent.split_last() else {
            return;
        };
        if let Some(Value::Array(arr)) = value_mut(v, list_path) {
            if let Some(i) = find_item(arr, item) {
                arr.remove(i);
            }
        }
        return;
    }
    if let (Some(f), Some(Value::Object(m))) = (last.strip_prefix("f:"), value_mut(v, parent)) {
        m.remove(f);
    }
}

fn value_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)?
        } else {
            let i = find_item(cur.as_array()?, seg)?;
            &mut cur.as_array_mut()?[i]
        };
    }
    Some(cur)
}

/// The fields of an object a manager can own: not the server's bookkeeping, and either
/// the status (status subresource) or everything else.
fn owned_part(obj: &Value, subresource: &str) -> Value {
    if subresource == "status" {
        return json!({"status": obj["status"].clone()});
    }
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = v["metadata"].as_object_mut() {
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
        if meta.is_empty() {
            v.as_object_mut().map(|m| m.remove("metadata"));
        }
    }
    v
}

/// Record a plain write by `manager`: the fields it changed (all, on create) become its
/// "Update" entry's, and leave every other entry (emptied entries go).
pub fn record_update(
    cur: Option<&Value>,
    next: &mut Value,
    manager: &str,
    now: &str,
    subresource: &str,
) {
    let mut entries: Vec<Value> = cur
        .map(|c| {
            c["metadata"]["managedFields"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let part = owned_part(next, subresource);
    let changed: BTreeSet<Path> = set_of(&fields_of(&part))
        .into_iter()
        .filter(|p| cur.is_none_or(|c| value_at(next, p) != value_at(c, p)))
        .collect();
    let sub = |e: &Value| e["subresource"].as_str().unwrap_or("").to_string();
    let mine =
        |e: &Value| e["manager"] == manager && e["operation"] == "Update" && sub(e) == subresource;
    if !changed.is_empty() {
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            let mut theirs = set_of(&e["fieldsV1"]);
            let before = theirs.len();
            theirs.retain(|p| !changed.contains(p));
            if theirs.len() != before {
                e["fieldsV1"] = unflatten(&theirs);
            }
        }
        entries.retain(|e| mine(e) || !set_of(&e["fieldsV1"]).is_empty());
        let mut owned = entries
            .iter()
            .find(|e| mine(e))
            .map(|e| set_of(&e["fieldsV1"]))
            .unwrap_or_default();
        owned.extend(changed);
        entries.retain(|e| !mine(e));
        let mut e = entry(manager, &next["apiVersion"], unflatten(&owned), now);
        e["operation"] = json!("Update");
        if !subresource.is_empty() {
            e["subresource"] = json!(subresource);
        }
        entries.push(e);
    }
    match entries.is_empty() {
        true => {
            next["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
        }
        false => next["metadata"]["managedFields"] = json!(entries),
    }
}

fn entry(manager: &str, api_version: &Value, fields: Value, now: &str) -> Value {
    json!({"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now,
           "fieldsType": "FieldsV1", "fieldsV1": fields})
}

/// The object a first apply creates: the configuration, owned by `manager`.
pub fn initial(applied: &Value, manager: &str, now: &str) -> Value {
    let mut obj = applied.clone();
    obj["metadata"]["managedFields"] = json!([entry(
        manager,
        &applied["apiVersion"],
        fields_of(applied),
        now
    )]);
    obj
}

/// Apply `applied` (from `manager`) to the current object.
pub fn apply(
    cur: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let mut entries: Vec<Value> = cur["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_set = set_of(&fields_of(applied));
    let mut conflicts = Vec::new();
    for e in entries.iter_mut() {
        if e["manager"] == manager {
            continue;
        }
        let mut theirs = set_of(&e["fieldsV1"]);
        // Values clash; a list item's "." marks only that it exists, which both may.
        let clash: Vec<Path> = theirs
            .iter()
            .filter(|p| p.last().is_none_or(|s| s != "."))
            .filter(|p| new_set.contains(*p) && value_at(applied, p) != value_at(cur, p))
            .cloned()
            .collect();
        if clash.is_empty() {
            continue;
        }
        if force {
            for p in &clash {
                theirs.remove(p);
            }
            e["fieldsV1"] = unflatten(&theirs);
        } else {
            for p in clash {
                let shown: Vec<String> = p
                    .iter()
                    .filter(|s| *s != ".")
                    .map(|s| s.trim_start_matches("f:").to_string())
                    .collect();
                conflicts.push(format!(
                    "conflict with \"{}\": .{}",
                    e["manager"].as_str().unwrap_or(""),
                    shown.join(".")
                ));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join("; ")
            ),
        ));
    }
    let old_set = entries
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == "Apply")
        .map(|e| set_of(&e["fieldsV1"]))
        .unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| e["manager"] != manager)
        .flat_map(|e| set_of(&e["fieldsV1"]))
        .collect();
    let mut doc = cur.clone();
    let mut patch = applied.clone();
    patch["metadata"]
        .as_object_mut()
        .map(|m| m.remove("managedFields"));
    strategic::apply(&mut doc, &patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Fields this manager applied before and no longer does, that nobody else owns, go.
    // Deepest first, so list items go after their fields.
    let mut removed: Vec<&Path> = old_set
        .iter()
        .filter(|p| !new_set.contains(*p) && !others.contains(*p))
        .collect();
    removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in removed {
        remove_at(&mut doc, p);
    }
    // This manager's previous apply is replaced; a manager forced out of every field goes.
    let previous = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";
    entries.retain(|e| !previous(e) && !set_of(&e["fieldsV1"]).is_empty());
    entries.push(entry(
        manager,
        &applied["apiVersion"],
        fields_of(applied),
        now,
    ));
    doc["metadata"]["managedFields"] = json!(entries);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, env: &[(&str, &str)]) -> Value {
        let env: Vec<Value> = env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": "a", "env": env}]}}}})
    }

    #[test]
    fn ownership_removal_and_conflicts() {
        let now = "2026-01-01T00:00:00Z";
        let first = initial(&deploy(2, &[("A", "1"), ("B", "2")]), "alice", now);
        // Alice drops B and changes replicas: B goes, the rest merges.
        let second = apply(&first, &deploy(3, &[("A", "1")]), "alice", false, now).unwrap();
        assert_eq!(second["spec"]["replicas"], 3);
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        // Bob applies a different replicas: conflict, unless forced.
        let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        let e = apply(&second, &bob, "bob", false, now).unwrap_err();
        assert_eq!(e.code, StatusCode::CONFLICT);
        assert!(
            e.message
                .contains("conflict with \"alice\": .spec.replicas"),
            "{}",
            e.message
        );
        let forced = apply(&second, &bob, "bob", true, now).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        // Alice no longer owns replicas: her next apply without it leaves Bob's value.
        let mut no_replicas = deploy(0, &[("A", "1")]);
        no_replicas["spec"]
            .as_object_mut()
            .unwrap()
            .remove("replicas");
        let after = apply(&forced, &no_replicas, "alice", false, now).unwrap();
        assert_eq!(after["spec"]["replicas"], 5);
        // The same value is no conflict.
        assert!(apply(&after, &bob, "bob", false, now).is_ok());
    }
}
