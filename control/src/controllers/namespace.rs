//! Namespace deletion: a Terminating namespace is emptied (every namespaced object in
//! it deleted as the API deletes: objects with finalizers and pods in their grace
//! period are marked and waited for), then finalized through the API (its
//! "kubernetes" finalizer cleared), which removes it.

use super::*;
use crate::apiserver::resources::RESOURCES;

/// Empties terminating namespaces; asks to run again soon while one still has content
/// (its objects' finalizers and grace periods run out on their own time).
pub fn reconcile(store: &Store) -> Result<Action, StoreError> {
    let mut action = Action::AwaitChange;
    for ns in list(store, "/registry/core/namespaces/")? {
        if ns["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let mut left = 0;
        for r in RESOURCES.iter().filter(|r| r.namespaced) {
            for kv in store.list(&r.prefix(Some(name)))?.0 {
                left += 1;
                super::delete(store, &kv.key, None)?;
            }
        }
        if left == 0 {
            finalize(store, &key_of(&ns, "core", "namespaces"))?;
        } else {
            action = Action::Requeue(Duration::from_secs(1));
        }
    }
    Ok(action)
}
