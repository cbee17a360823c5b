//! A controller's cache of the objects it reads (kube-rs' reflector, client-go's
//! informer store): filled by one list, kept by a watch from the list's revision, and
//! by the controller's own writes as they are acknowledged, so a reconcile reads what
//! it just wrote (the job client-go's "expectations" do: a ReplicaSet that created two
//! pods sees them at its next reconcile, before their watch events arrive).
//!
//! Objects are held by store key, decoded whole or through a mask (only the fields read,
//! [`super::view::masked`]), with two indexes: uid → key (does an owner exist) and owner
//! uid → keys of the objects naming it in ownerReferences (a ReplicaSet's pods without a
//! pass over every pod).

use super::view;
use crate::store::{Event, EventKind, KeyValue, Store, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One watched prefix and how its objects are held (a mask, or whole).
#[derive(Clone, Copy)]
pub struct Kind {
    pub prefix: &'static str,
    pub mask: Option<&'static Value>,
    /// Hold only objects whose controlling owner is of this kind (a ReplicaSet
    /// controller holds the pods of ReplicaSets, not every pod).
    pub owner_kind: Option<&'static str>,
}

impl Kind {
    pub const fn whole(prefix: &'static str) -> Kind {
        Kind {
            prefix,
            mask: None,
            owner_kind: None,
        }
    }

    pub const fn masked(prefix: &'static str, mask: &'static Value) -> Kind {
        Kind {
            prefix,
            mask: Some(mask),
            owner_kind: None,
        }
    }

    pub const fn owned_by(self, kind: &'static str) -> Kind {
        Kind {
            owner_kind: Some(kind),
            ..self
        }
    }
}

pub struct Reflector {
    kinds: Vec<Kind>,
    objects: BTreeMap<String, Value>,
    /// Revision of each held object (its resourceVersion; for one this controller
    /// marked deleted, the revision it had then).
    revs: HashMap<String, i64>,
    uids: HashMap<String, String>,
    dependents: HashMap<String, BTreeSet<String>>,
}

fn uid(o: &Value) -> Option<&str> {
    o["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
}

fn owners(o: &Value) -> impl Iterator<Item = &str> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn controller_kind(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["kind"]
        .as_str()
}

fn rv(o: &Value) -> i64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Reflector {
    pub fn new(kinds: &[Kind]) -> Reflector {
        Reflector {
            kinds: kinds.to_vec(),
            objects: BTreeMap::new(),
            revs: HashMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
        }
    }

    pub fn prefixes(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.prefix).collect()
    }

    fn kind_of(&self, key: &str) -> Option<Kind> {
        // The longest prefix: "/registry/" (everything) and a narrower one may both be
        // watched.
        self.kinds
            .iter()
            .filter(|k| key.starts_with(k.prefix))
            .max_by_key(|k| k.prefix.len())
            .copied()
    }

    /// Everything again from one list per prefix; the revision to watch from.
    pub fn load(&mut self, store: &Store) -> Result<i64, StoreError> {
        let rev = store.revision()?;
        let mut fresh = Reflector::new(&self.kinds);
        for k in &self.kinds {
            for kv in store.list(k.prefix)?.0 {
                let v = fresh.decode(&kv);
                fresh.insert(&kv.key, v, kv.mod_revision);
            }
        }
        *self = fresh;
        Ok(rev)
    }

    /// The object of `kv` as this cache holds it.
    pub fn decode(&self, kv: &KeyValue) -> Value {
        match self.kind_of(&kv.key).and_then(|k| k.mask) {
            Some(mask) => view::masked(kv, mask),
            None => crate::apiserver::objects::decode(kv),
        }
    }

    fn insert(&mut self, key: &str, v: Value, rev: i64) {
        self.remove(key);
        let wanted = self.kind_of(key).and_then(|k| k.owner_kind);
        if wanted.is_some_and(|kind| controller_kind(&v) != Some(kind)) {
            return;
        }
        if let Some(u) = uid(&v) {
            self.uids.insert(u.to_string(), key.to_string());
        }
        for o in owners(&v) {
            self.dependents
                .entry(o.to_string())
                .or_default()
                .insert(key.to_string());
        }
        self.revs.insert(key.to_string(), rev);
        self.objects.insert(key.to_string(), v);
    }

    fn remove(&mut self, key: &str) {
        self.revs.remove(key);
        let Some(old) = self.objects.remove(key) else {
            return;
        };
        if let Some(u) = uid(&old) {
            if self.uids.get(u).is_some_and(|k| k == key) {
                self.uids.remove(u);
            }
        }
        for o in owners(&old) {
            if let Some(set) = self.dependents.get_mut(o) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
    }

    /// A watch event. An event no newer than what is held (this controller's own
    /// write, put here when it was acknowledged) changes nothing.
    pub fn apply(&mut self, ev: &Event) {
        let key = &ev.kv.key;
        if self
            .revs
            .get(key)
            .is_some_and(|held| *held >= ev.revision())
        {
            return;
        }
        match ev.kind {
            EventKind::Put => {
                let v = self.decode(&ev.kv);
                self.insert(key, v, ev.revision());
            }
            EventKind::Delete => self.remove(key),
        }
    }

    /// This controller wrote `o` (as the API returned it) at `key`.
    pub fn wrote(&mut self, key: &str, o: &Value) {
        let Some(kind) = self.kind_of(key) else {
            return;
        };
        let rev = rv(o);
        if self.revs.get(key).is_some_and(|held| *held >= rev) {
            return;
        }
        let v = match kind.mask {
            Some(mask) => {
                let mut v = view::mask_value(o, mask);
                v["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
                v
            }
            None => o.clone(),
        };
        self.insert(key, v, rev);
    }

    /// This controller deleted the object at `key`: held as deleting (not counted as
    /// live) until the watch says it is gone or shows it as it is.
    pub fn deleting(&mut self, key: &str) {
        if let Some(o) = self.objects.get_mut(key) {
            if o["metadata"]["deletionTimestamp"].is_null() {
                o["metadata"]["deletionTimestamp"] =
                    Value::String(crate::apiserver::objects::now_rfc3339());
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The held objects under `prefix`, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The key of the held object with this uid.
    pub fn key_of_uid(&self, uid: &str) -> Option<&str> {
        self.uids.get(uid).map(String::as_str)
    }

    /// Whether an object with this uid is held.
    pub fn has_uid(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// The held objects under `prefix` whose controlling owner has `uid`.
    pub fn controlled_by<'a>(
        &'a self,
        uid: &'a str,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a Value> {
        self.dependents_of(uid)
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .filter(move |v| super::controller_uid(v) == Some(uid))
    }

    /// The held objects naming `uid` in their ownerReferences, with their keys.
    pub fn dependents_of<'a>(&'a self, uid: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| Some((k.as_str(), self.objects.get(k)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(key: &str, o: &Value, rev: i64, prev: Option<&Value>) -> Event {
        let kv = |o: &Value, rev| KeyValue {
            key: key.into(),
            value: serde_json::to_vec(o).unwrap().into(),
            create_revision: 1,
            mod_revision: rev,
            version: 1,
        };
        Event {
            kind: EventKind::Put,
            kv: kv(o, rev),
            prev: prev.map(|p| kv(p, rev - 1)),
        }
    }

    #[test]
    fn own_writes_are_read_back_and_older_events_do_not_undo_them() {
        let mut r = Reflector::new(&[
            Kind::whole("/registry/apps/replicasets/"),
            Kind::masked("/registry/core/pods/", view::pod_fields()),
        ]);
        let rs = json!({"metadata": {"name": "r", "namespace": "d", "uid": "u1"}});
        r.apply(&put("/registry/apps/replicasets/d/r", &rs, 5, None));
        // A pod this controller created at revision 9: held at once, masked.
        let pod = json!({"metadata": {"name": "p", "namespace": "d", "uid": "u2", "resourceVersion": "9",
            "managedFields": [{}], "ownerReferences": [{"uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        r.wrote("/registry/core/pods/d/p", &pod);
        let held: Vec<&Value> = r.controlled_by("u1", "/registry/core/pods/").collect();
        assert_eq!(held.len(), 1);
        assert!(held[0]["metadata"]["managedFields"].is_null());
        assert!(held[0]["spec"]["containers"][0]["image"].is_null());
        // Deleted by it: held as deleting until the watch says more.
        r.deleting("/registry/core/pods/d/p");
        assert!(
            r.get("/registry/core/pods/d/p").unwrap()["metadata"]["deletionTimestamp"].is_string()
        );
        // The watch's echo of the create (revision 9) does not bring it back to life.
        r.apply(&put("/registry/core/pods/d/p", &pod, 9, None));
        assert!(
            r.get("/registry/core/pods/d/p").unwrap()["metadata"]["deletionTimestamp"].is_string()
        );
        // A stale delete (revision 7, before a re-create at 9) leaves the object.
        let mut del = put("/registry/core/pods/d/p", &json!({}), 7, None);
        del.kind = EventKind::Delete;
        r.apply(&del);
        assert!(r.get("/registry/core/pods/d/p").is_some());
        // The real delete (revision 12) removes it and its index entries.
        del.kv.mod_revision = 12;
        r.apply(&del);
        assert!(r.get("/registry/core/pods/d/p").is_none());
        assert_eq!(r.controlled_by("u1", "/registry/core/pods/").count(), 0);
        assert!(!r.has_uid("u2"));
        assert!(r.has_uid("u1"));
        assert_eq!(r.list("/registry/apps/").count(), 1);
    }
}
