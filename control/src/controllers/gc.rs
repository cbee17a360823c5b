//! Garbage collection by ownerReferences: an object whose controlling owner no longer
//! exists is deleted (background cascading delete: deleting a Deployment removes its
//! ReplicaSets and then their Pods). Owners deleted in the foreground (finalizer
//! `foregroundDeletion`) first lose their dependents, then go themselves.

use super::*;
use std::collections::HashSet;

const FOREGROUND: &str = "foregroundDeletion";

fn mentions(kv: &crate::store::KeyValue, needle: &[u8]) -> bool {
    kv.value.windows(needle.len()).any(|w| w == needle)
}

pub fn reconcile(store: &Store) -> Result<(), StoreError> {
    let (everything, _) = store.list("/registry/")?;
    let uids: HashSet<String> = everything
        .iter()
        .filter_map(super::view::of)
        .map(|u| u.metadata.uid)
        .filter(|u| !u.is_empty())
        .collect();
    let uids: HashSet<&str> = uids.iter().map(String::as_str).collect();
    // Only owned objects and foreground deletions are looked at further.
    let all: Vec<&crate::store::KeyValue> = everything
        .iter()
        .filter(|kv| mentions(kv, b"\"ownerReferences\"") || mentions(kv, FOREGROUND.as_bytes()))
        .collect();
    // Only what ownership and deletion say: the rest is not built (an object is
    // decoded whole only to be written).
    let mask = json!({"metadata": {"uid": true, "ownerReferences": true, "finalizers": true,
        "deletionTimestamp": true}});
    let objs: Vec<Value> = all
        .iter()
        .map(|kv| super::view::masked(kv, &mask))
        .collect();
    for (kv, o) in all.iter().zip(&objs) {
        if let Some(owner) = controller_uid(o) {
            if !uids.contains(owner) && o["metadata"]["deletionTimestamp"].is_null() {
                super::delete(store, &kv.key, None)?;
            }
        }
    }
    for (kv, o) in all.iter().zip(&objs) {
        let fins = o["metadata"]["finalizers"].as_array();
        if o["metadata"]["deletionTimestamp"].is_null()
            || !fins.is_some_and(|f| f.iter().any(|x| x == FOREGROUND))
        {
            continue;
        }
        let uid = o["metadata"]["uid"].as_str().unwrap_or("");
        let dependents: Vec<(&&crate::store::KeyValue, &Value)> = all
            .iter()
            .zip(&objs)
            .filter(|(_, d)| {
                d["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["uid"] == uid))
            })
            .collect();
        if dependents.is_empty() {
            let mut next = decode(kv);
            let left: Vec<Value> = fins
                .into_iter()
                .flatten()
                .filter(|x| *x != FOREGROUND)
                .cloned()
                .collect();
            // With no finalizer left the API's update removes it.
            next["metadata"]["finalizers"] = json!(left);
            update(store, &kv.key, &next)?;
        } else {
            for (dkv, _) in dependents {
                super::delete(store, &dkv.key, None)?;
            }
        }
    }
    Ok(())
}
