//! Garbage collection by ownerReferences (background cascading delete): an object whose
//! controlling owner no longer exists is deleted, so deleting a Deployment removes its
//! ReplicaSets and then their Pods.

use super::*;
use std::collections::HashSet;

pub fn reconcile(store: &Store) {
    let (all, _) = store.list("/registry/");
    let uids: HashSet<String> = all
        .iter()
        .map(decode)
        .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    for kv in &all {
        let o = decode(kv);
        if let Some(owner) = controller_uid(&o) {
            if !uids.contains(owner) {
                let _ = store.delete(&kv.key, Precondition::Revision(kv.mod_revision));
            }
        }
    }
}
