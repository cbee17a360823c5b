//! Garbage collection by ownerReferences: an object whose controlling owner no longer
//! exists is deleted (background cascading delete: deleting a Deployment removes its
//! ReplicaSets and then their Pods). Owners deleted in the foreground (finalizer
//! `foregroundDeletion`) first lose their dependents, then go themselves.
//!
//! As kube's garbage collector, it holds a graph of every object's uid and owners
//! (here: a cache of everything, each object reduced to those fields) and works on the
//! objects an event concerns: a new or changed owned object, the dependents of an
//! object that went or is being deleted, the owner of a dependent that went.

use super::controller::Reconciler;
use super::reflector::{Kind, Reflector};
use super::*;

const FOREGROUND: &str = "foregroundDeletion";
const ALL: &str = "/registry/";

fn mask() -> &'static Value {
    static MASK: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    MASK.get_or_init(|| {
        json!({"metadata": {"uid": true, "ownerReferences": true, "finalizers": true,
            "deletionTimestamp": true}})
    })
}

fn owned(o: &Value) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
}

fn foreground(o: &Value) -> bool {
    o["metadata"]["deletionTimestamp"].is_string()
        && o["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == FOREGROUND))
}

pub(crate) struct Controller;

impl Reconciler for Controller {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::masked(ALL, mask())]
    }

    fn keys(&self, cache: &Reflector) -> Vec<String> {
        cache
            .list(ALL)
            .filter(|(_, o)| owned(o) || foreground(o))
            .map(|(k, _)| k.to_string())
            .collect()
    }

    fn concerned(
        &self,
        cache: &Reflector,
        key: &str,
        prev: Option<&Value>,
        now: Option<&Value>,
    ) -> Vec<String> {
        let fields = |o: Option<&Value>| {
            o.map(|o| {
                (
                    o["metadata"]["ownerReferences"].clone(),
                    o["metadata"]["finalizers"].clone(),
                    o["metadata"]["deletionTimestamp"].clone(),
                )
            })
        };
        // Status writes and the like (most events) change none of these.
        if prev.is_some() && fields(prev) == fields(now) {
            return Vec::new();
        }
        let mut keys = Vec::new();
        if now.is_some_and(|o| owned(o) || foreground(o)) {
            keys.push(key.to_string());
        }
        let gone_or_going = now.is_none_or(|o| o["metadata"]["deletionTimestamp"].is_string());
        if let (true, Some(o)) = (gone_or_going, prev.or(now)) {
            // Its dependents may be orphans now (or wait for it, in the foreground).
            if let Some(uid) = o["metadata"]["uid"].as_str() {
                keys.extend(cache.dependents_of(uid).map(|(k, _)| k.to_string()));
            }
            // An owner deleting in the foreground may have lost its last dependent.
            if now.is_none() {
                for r in o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(k) = r["uid"].as_str().and_then(|u| cache.key_of_uid(u)) {
                        keys.push(k.to_string());
                    }
                }
            }
        }
        keys
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        let Some(o) = cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        if let Some(owner) = controller_uid(o) {
            if !cache.has_uid(owner) && o["metadata"]["deletionTimestamp"].is_null() {
                tracing::debug!(object = key, owner, "owner is gone: deleting");
                super::delete(store, key, None)?;
                return Ok(Action::AwaitChange);
            }
        }
        if !foreground(o) {
            return Ok(Action::AwaitChange);
        }
        let uid = o["metadata"]["uid"].as_str().unwrap_or("");
        let dependents: Vec<String> = cache
            .dependents_of(uid)
            .map(|(k, _)| k.to_string())
            .collect();
        if dependents.is_empty() {
            // Decoded whole only to be written; with no finalizer left the API's update
            // removes it.
            let Some(kv) = store.get(key)? else {
                return Ok(Action::AwaitChange);
            };
            let mut next = decode(&kv);
            let left: Vec<Value> = next["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| *x != FOREGROUND)
                .cloned()
                .collect();
            next["metadata"]["finalizers"] = json!(left);
            update(store, key, &next)?;
        } else {
            for d in dependents {
                super::delete(store, &d, None)?;
            }
        }
        Ok(Action::AwaitChange)
    }
}
