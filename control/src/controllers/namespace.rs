//! Namespace deletion: a Terminating namespace is emptied (every namespaced object in
//! it deleted as the API deletes: objects with finalizers and pods in their grace
//! period are marked and waited for), then finalized through the API (its
//! "kubernetes" finalizer cleared), which removes it.

use super::controller::Reconciler;
use super::reflector::{Kind, Reflector};
use super::*;
use crate::apiserver::resources::RESOURCES;

const NAMESPACES: &str = "/registry/core/namespaces/";

pub(crate) struct Controller;

impl Reconciler for Controller {
    fn name(&self) -> &'static str {
        "namespace"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::whole(NAMESPACES)]
    }

    /// Empties a terminating namespace; asks to come back soon while it still has
    /// content (its objects' finalizers and grace periods run out on their own time).
    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        let Some(ns) = cache
            .get(key)
            .filter(|ns| ns["metadata"]["deletionTimestamp"].is_string())
        else {
            return Ok(Action::AwaitChange);
        };
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let mut left = 0;
        for r in RESOURCES.iter().filter(|r| r.namespaced) {
            for kv in store.list(&r.prefix(Some(name)))?.0 {
                left += 1;
                super::delete(store, &kv.key, None)?;
            }
        }
        if left == 0 {
            finalize(store, key)?;
            Ok(Action::AwaitChange)
        } else {
            Ok(Action::Requeue(Duration::from_secs(1)))
        }
    }
}
