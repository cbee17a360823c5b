//! Namespace deletion: a Terminating namespace is emptied (every namespaced object in
//! it deleted; objects with finalizers are marked and waited for), then removed.

use super::*;
use crate::apiserver::objects::remove_now;
use crate::apiserver::resources::RESOURCES;

pub fn reconcile(store: &Store) {
    for ns in list(store, "/registry/core/namespaces/") {
        if ns["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let mut left = 0;
        for r in RESOURCES.iter().filter(|r| r.namespaced) {
            for kv in store.list(&r.prefix(Some(name))).0 {
                left += 1;
                let mut o = decode(&kv);
                let has_finalizers = o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if !has_finalizers {
                    remove_now(store, &kv.key, Some(kv.mod_revision));
                } else if o["metadata"]["deletionTimestamp"].is_null() {
                    o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                    update(store, &kv.key, &o);
                }
            }
        }
        if left == 0 {
            let key = key_of(&ns, "core", "namespaces");
            let rev = ns["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok());
            remove_now(store, &key, rev);
        }
    }
}
