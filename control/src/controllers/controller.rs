//! A controller of keys, as kube-rs' `Controller` and client-go's workqueue: one list
//! and a watch keep a [`Reflector`]; each event queues the keys of the objects it
//! concerns (a pod's event: its owning ReplicaSet); a key is reconciled alone from the
//! cache, one reconcile per key at a time, and comes back after the delay its
//! [`Action`] asks for, or with back-off when it failed. Every key is queued again each
//! resync period. Nothing polls and nothing relists on an event.

use super::queue::WorkQueue;
use super::reflector::{Kind, Reflector};
use super::Action;
use crate::store::{Event, EventKind, Store, StoreError};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) trait Reconciler: Send + 'static {
    /// The controller's name in logs and thread names.
    fn name(&self) -> &'static str;

    /// What it watches and holds; the first is the kind whose objects it reconciles.
    fn kinds(&self) -> Vec<Kind>;

    /// The kind of the reconciled objects as ownerReferences name it, when they control
    /// objects of the other kinds: an event of such an object queues its owner.
    fn owner_kind(&self) -> Option<&'static str> {
        None
    }

    /// Every key to reconcile, from the cache (at start and each resync): the objects of
    /// the first kind.
    fn keys(&self, cache: &Reflector) -> Vec<String> {
        let own = self.kinds()[0].prefix;
        cache.list(own).map(|(k, _)| k.to_string()).collect()
    }

    /// The keys an event concerns, from the object before and after it (None: absent)
    /// and the cache as it was before the event: by default the object itself, or its
    /// controlling owner ([`Reconciler::owner_kind`]).
    fn concerned(
        &self,
        _cache: &Reflector,
        key: &str,
        prev: Option<&Value>,
        now: Option<&Value>,
    ) -> Vec<String> {
        let own = self.kinds()[0].prefix;
        match self.owner_kind() {
            Some(kind) => own_or_owner(key, own, kind, prev, now),
            None if key.starts_with(own) => vec![key.to_string()],
            None => Vec::new(),
        }
    }

    /// Bring the world to what the object at `key` asks for.
    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError>;

    fn resync(&self) -> Duration {
        super::RESYNC
    }
}

/// The object at `key` unless it is gone or being deleted (what most reconciles act on).
pub(crate) fn live<'a>(cache: &'a Reflector, key: &str) -> Option<&'a Value> {
    cache
        .get(key)
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
}

/// What the controller thread wrote, as acknowledged by the API, for its cache.
enum Written {
    Object(String, Value),
    Deleting(String),
}

thread_local! {
    /// Kept only on a controller's thread (None elsewhere: nobody would read it).
    static WRITTEN: RefCell<Option<Vec<Written>>> = const { RefCell::new(None) };
}

fn note(w: Written) {
    WRITTEN.with(|cell| {
        if let Some(v) = cell.borrow_mut().as_mut() {
            v.push(w)
        }
    });
}

/// The API wrote `o` at `key` for this thread (the shared write helpers call this).
pub(crate) fn note_written(key: &str, o: &Value) {
    note(Written::Object(key.into(), o.clone()));
}

/// The API deleted (or marked deleted) the object at `key` for this thread.
pub(crate) fn note_deleting(key: &str) {
    note(Written::Deleting(key.into()));
}

fn take_written() -> Vec<Written> {
    WRITTEN.with(|cell| {
        cell.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

/// Run `r` on its own thread while `lead` says so.
pub(crate) fn run<R: Reconciler>(
    store: Store,
    lead: Arc<AtomicBool>,
    mut r: R,
) -> std::thread::JoinHandle<()> {
    let name = r.name();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            WRITTEN.with(|cell| *cell.borrow_mut() = Some(Vec::new()));
            let mut cache = Reflector::new(&r.kinds());
            let mut pause = Duration::ZERO;
            loop {
                std::thread::sleep(pause);
                if !lead.load(Ordering::SeqCst) {
                    pause = Duration::from_secs(1);
                    continue;
                }
                // (Re)start from a list; a watch from its revision keeps the cache.
                let started = cache
                    .load(&store)
                    .and_then(|rev| store.watch_many(&cache.prefixes(), rev));
                let w = match started {
                    Ok(w) => w,
                    Err(e) => {
                        pause = (pause * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                        tracing::warn!(controller = name, error = %e, retry_in = ?pause, "cannot read the cluster");
                        continue;
                    }
                };
                pause = Duration::ZERO;
                if let Err(e) = serve(&store, &mut r, &mut cache, &w, &lead) {
                    tracing::warn!(controller = name, error = %e, "watch ended; listing again");
                }
            }
        })
        .expect("spawn controller")
}

/// Events into the cache and the queue, keys out of it, until the watch fails or the
/// lead is lost.
fn serve<R: Reconciler>(
    store: &Store,
    r: &mut R,
    cache: &mut Reflector,
    w: &crate::store::Watch,
    lead: &AtomicBool,
) -> Result<(), StoreError> {
    let name = r.name();
    let q = WorkQueue::default();
    let all = |q: &WorkQueue, r: &R, cache: &Reflector| {
        for k in r.keys(cache) {
            q.add(&k);
        }
    };
    all(&q, r, cache);
    let mut resync = Instant::now();
    loop {
        if !lead.load(Ordering::SeqCst) {
            return Ok(());
        }
        if resync.elapsed() >= r.resync() {
            resync = Instant::now();
            all(&q, r, cache);
        }
        // Events first, so a key is reconciled from everything seen so far.
        let wait = if q.len() > 0 {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(1)
        };
        let first = w.recv_timeout(wait)?;
        for ev in first.into_iter().chain(w.drain()?) {
            for k in concerned_by(r, cache, &ev) {
                q.add(&k);
            }
            cache.apply(&ev);
        }
        while let Some(key) = q.get(Duration::ZERO) {
            let result = r.reconcile(store, cache, &key);
            for written in take_written() {
                match written {
                    Written::Object(k, o) => cache.wrote(&k, &o),
                    Written::Deleting(k) => cache.deleting(&k),
                }
            }
            match result {
                Ok(Action::AwaitChange) => q.forget(&key),
                Ok(Action::Requeue(after)) => {
                    q.forget(&key);
                    q.add_after(&key, after);
                }
                Err(e) => {
                    let after = q.retry(&key);
                    tracing::warn!(controller = name, key = %key, error = %e, retry_in = ?after, "reconcile failed");
                }
            }
            q.done(&key);
        }
    }
}

fn concerned_by<R: Reconciler>(r: &R, cache: &Reflector, ev: &Event) -> Vec<String> {
    let prev = ev.prev.as_ref().map(|p| cache.decode(p));
    let now = match ev.kind {
        EventKind::Put => Some(cache.decode(&ev.kv)),
        EventKind::Delete => None,
    };
    r.concerned(cache, &ev.kv.key, prev.as_ref(), now.as_ref())
}

/// The store key of `o`'s controlling owner if it is of `kind`, under `prefix` (the
/// owner's kind's prefix; owners are in their dependent's namespace).
pub(crate) fn owner_key(o: &Value, kind: &str, prefix: &str) -> Option<String> {
    let r = o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?;
    if r["kind"] != kind {
        return None;
    }
    let ns = o["metadata"]["namespace"].as_str()?;
    Some(format!("{prefix}{ns}/{}", r["name"].as_str()?))
}

/// The keys of the usual controller of `kind` objects under `own` with dependents under
/// other prefixes: an event of its own kind queues that object, an event of a
/// dependent queues its controlling owner of that kind (before and after).
pub(crate) fn own_or_owner(
    key: &str,
    own: &str,
    kind: &str,
    prev: Option<&Value>,
    now: Option<&Value>,
) -> Vec<String> {
    if key.starts_with(own) {
        return vec![key.to_string()];
    }
    let mut keys: Vec<String> = prev
        .into_iter()
        .chain(now)
        .filter_map(|o| owner_key(o, kind, own))
        .collect();
    keys.dedup();
    keys
}
