//! The embedded store: an MVCC key-value map with a global revision, optimistic
//! concurrency (compare on mod_revision), watches from a revision, and compaction —
//! what the Kubernetes API server needs from etcd.
//!
//! Durability: every write is in the WAL and fsync'd before it is acknowledged, and
//! nothing is visible before it is durable: reads wait for the revision they read to be
//! flushed, and watchers get events only once flushed. So a crash can lose only writes
//! nobody saw, and a revision handed out again after recovery was never observed.
//! Concurrent writers share fsyncs (group commit: whoever finds no flush in progress
//! flushes everything pending). Compaction writes a snapshot and starts a new WAL.
//!
//! Lock order: watchers, then state, then commit.

pub mod compactor;
mod etcd;

pub use etcd::EtcdTls;
mod wal;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use wal::{Record, Wal};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    /// Shared: the store's copy, the watch history's and every reader's are one
    /// allocation (a list of the whole store clones no object).
    pub value: std::sync::Arc<[u8]>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last write; the object's resourceVersion.
    pub mod_revision: i64,
    /// Writes since creation.
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The new value (for a delete: the key with the deleting revision, empty value).
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("conflict on {key}: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("revision {requested} has been compacted (oldest available {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("store I/O: {0}")]
    Io(String),
    /// No member of the store could answer (etcd down, no quorum, no leader).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The API refused the object (validation, admission): controllers write through
    /// the API's code and get its answer as this.
    #[error("refused: {0}")]
    Invalid(String),
    /// The store did not answer within the request's deadline; a write's outcome is
    /// unknown.
    #[error("store timeout: {0}")]
    Timeout(String),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
}

/// A page of a range read.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Keys in order, as they were at `revision`.
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: i64,
    /// Keys in the range after the page's last one.
    pub remaining: i64,
}

/// The end of the key range under `prefix` (exclusive): the prefix with its last byte
/// incremented, as etcd's prefix reads do.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return String::from_utf8_lossy(&b).into_owned();
        }
    }
    "\0".into()
}

/// What a write requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with this mod_revision (update/delete with resourceVersion).
    Revision(i64),
    /// The key must exist.
    Exists,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    rev: i64,
    compacted: i64,
    keys: BTreeMap<String, KeyValue>,
    #[serde(skip)]
    history: VecDeque<Event>,
}

struct Watcher {
    prefix: String,
    tx: flume::Sender<Result<Event, StoreError>>,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    watchers: Mutex<Vec<Watcher>>,
    commit: Mutex<Commit>,
    flushed: Condvar,
}

/// Group-commit bookkeeping: bytes waiting for the WAL, and how far it is durable.
struct Commit {
    wal: Wal,
    pending: Vec<u8>,
    /// Events of the pending records, for the watchers once they are durable.
    pending_events: Vec<Event>,
    pending_rev: i64,
    durable_rev: i64,
    flushing: bool,
    failed: Option<String>,
}

/// The embedded backend.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

/// The store the API server and controllers use: embedded (default), or etcd v3 for
/// several API servers sharing one cluster state.
#[derive(Clone)]
pub enum Store {
    Embedded(Embedded),
    Etcd(Box<etcd::Etcd>),
}

impl Store {
    /// Open (or create) the embedded store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        Embedded::open(dir).map(Store::Embedded)
    }

    /// Use an etcd v3 cluster (endpoints like "http://127.0.0.1:2379", one per member;
    /// "https://" with `tls`).
    pub fn etcd(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Store, StoreError> {
        etcd::Etcd::connect(endpoints, tls).map(|e| Store::Etcd(Box::new(e)))
    }

    /// The current revision.
    pub fn revision(&self) -> Result<i64, StoreError> {
        match self {
            Store::Embedded(s) => s.revision(),
            Store::Etcd(s) => s.revision(),
        }
    }

    /// Whether the store can answer now (what /readyz asks): the embedded store unless its
    /// WAL has failed; etcd when a member answers a linearizable read, which needs a
    /// leader and quorum.
    pub fn check(&self) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.check(),
            Store::Etcd(s) => s.check(),
        }
    }

    /// A revision every watch has already been handed all events up to, if the backend
    /// can tell: the embedded store queues events to watchers under the lock that orders
    /// revisions, so its current revision is one. etcd's watch streams lag: no answer.
    pub fn settled_revision(&self) -> Option<i64> {
        match self {
            Store::Embedded(s) => Some(s.durable_revision()),
            Store::Etcd(_) => None,
        }
    }

    /// The oldest revision watches can start after (0 where the backend does not say).
    pub fn compacted_revision(&self) -> i64 {
        match self {
            Store::Embedded(s) => s.compacted_revision(),
            Store::Etcd(_) => 0,
        }
    }

    /// The key's current value; Ok(None) only when the store says it is absent.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self {
            Store::Embedded(s) => s.get(key),
            Store::Etcd(s) => s.get(key),
        }
    }

    /// Keys under `prefix` in key order, and the revision they were read at.
    pub fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError> {
        self.range(prefix, None, 0, 0).map(|p| (p.kvs, p.revision))
    }

    /// Up to `limit` keys under `prefix` after `after` (0: all), as they were at revision
    /// `at` (0: now): what a paged list reads, each page at the first page's revision.
    /// A compacted `at` is an error (the client starts over).
    pub fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        at: i64,
    ) -> Result<Page, StoreError> {
        match self {
            Store::Embedded(s) => s.range(prefix, after, limit, at),
            Store::Etcd(s) => s.range(prefix, after, limit, at),
        }
    }

    pub fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<KeyValue, StoreError> {
        match self {
            Store::Embedded(s) => s.put(key, value, pre),
            Store::Etcd(s) => s.put(key, value, pre),
        }
    }

    pub fn delete(&self, key: &str, pre: Precondition) -> Result<KeyValue, StoreError> {
        match self {
            Store::Embedded(s) => s.delete(key, pre),
            Store::Etcd(s) => s.delete(key, pre),
        }
    }

    pub fn watch(&self, prefix: &str, from: i64) -> Result<Watch, StoreError> {
        self.watch_many(&[prefix], from)
    }

    /// One stream of the events under any of `prefixes` (each key's events in order).
    pub fn watch_many(&self, prefixes: &[&str], from: i64) -> Result<Watch, StoreError> {
        match self {
            Store::Embedded(s) => s.watch_many(prefixes, from),
            Store::Etcd(s) => s.watch_many(prefixes, from),
        }
    }

    pub fn compact(&self, rev: i64) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.compact(rev),
            Store::Etcd(s) => s.compact(rev),
        }
    }
}

/// A stream of events under a prefix, in revision order. It ends only with an error
/// (the backend lost it and could not resume it, or its start was compacted), so a
/// consumer can tell "nothing happened" from "the stream is gone".
pub struct Watch {
    rx: flume::Receiver<Result<Event, StoreError>>,
    /// Dropped with the watch: tells a backend's watch task to end (etcd cancels its
    /// watch at once rather than at the next event). Hence the receiver is reached
    /// through methods: a closure that captured only it would drop this early.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Per watched prefix, the revision up to which its backend stream has delivered
    /// every event (etcd's progress answers; 0 until one came). Empty: the backend
    /// says it another way ([`Store::settled_revision`]).
    settled: Vec<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

impl Watch {
    pub(crate) fn new(
        rx: flume::Receiver<Result<Event, StoreError>>,
        stop: Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> Watch {
        Watch {
            rx,
            _stop: stop,
            settled: Vec::new(),
        }
    }

    pub(crate) fn with_settled(
        mut self,
        settled: Vec<std::sync::Arc<std::sync::atomic::AtomicI64>>,
    ) -> Watch {
        self.settled = settled;
        self
    }

    /// A revision this watch has been handed every event up to (its events up to it
    /// are in its queue), where its backend says so per watch (etcd): an idle watch's
    /// bookmark. None until every stream has said.
    pub fn settled(&self) -> Option<i64> {
        let revs = self
            .settled
            .iter()
            .map(|s| s.load(std::sync::atomic::Ordering::SeqCst));
        let min = revs.min()?;
        (min > 0).then_some(min)
    }

    /// The next event, None if none came within `t`, or why the watch ended.
    pub fn recv_timeout(&self, t: std::time::Duration) -> Result<Option<Event>, StoreError> {
        match self.rx.recv_timeout(t) {
            Ok(r) => r.map(Some),
            Err(flume::RecvTimeoutError::Timeout) => Ok(None),
            Err(flume::RecvTimeoutError::Disconnected) => Err(ended()),
        }
    }

    /// The next event, waiting without a thread (for async servers: thousands of open
    /// watches cost a task each, not an OS thread).
    pub async fn recv(&self) -> Result<Event, StoreError> {
        match self.rx.recv_async().await {
            Ok(r) => r,
            Err(flume::RecvError::Disconnected) => Err(ended()),
        }
    }

    /// The channel itself, to wait on it with others (flume::Selector).
    pub fn receiver(&self) -> &flume::Receiver<Result<Event, StoreError>> {
        &self.rx
    }

    /// The next event if one has arrived.
    pub fn try_recv(&self) -> Result<Option<Event>, StoreError> {
        match self.rx.try_recv() {
            Ok(r) => r.map(Some),
            Err(flume::TryRecvError::Empty) => Ok(None),
            Err(flume::TryRecvError::Disconnected) => Err(ended()),
        }
    }

    /// Everything that has arrived so far, without waiting.
    pub fn drain(&self) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        while let Some(e) = self.try_recv()? {
            out.push(e);
        }
        Ok(out)
    }
}

fn ended() -> StoreError {
    StoreError::Unavailable("the store ended the watch".into())
}

/// Two key-ordered sequences as one (keys are distinct across them).
fn merge_sorted<'a, T: Copy + 'a>(
    a: impl Iterator<Item = (&'a str, T)>,
    b: impl Iterator<Item = (&'a str, T)>,
) -> impl Iterator<Item = (&'a str, T)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((ka, _)), Some((kb, _))) if ka <= kb => a.next(),
        (Some(_), Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

fn check(pre: Precondition, key: &str, cur: Option<&KeyValue>) -> Result<(), StoreError> {
    match (pre, cur) {
        (Precondition::None, _) => Ok(()),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists(key.into())),
        (Precondition::Exists, Some(_)) => Ok(()),
        (Precondition::Exists | Precondition::Revision(_), None) => {
            Err(StoreError::NotFound(key.into()))
        }
        (Precondition::Revision(r), Some(kv)) if kv.mod_revision == r => Ok(()),
        (Precondition::Revision(r), Some(kv)) => Err(StoreError::Conflict {
            key: key.into(),
            expected: r,
            actual: kv.mod_revision,
        }),
    }
}

impl State {
    fn apply(&mut self, rec: &Record) -> Option<Event> {
        match rec {
            Record::Put { rev, key, value } => {
                let prev = self.keys.get(key).cloned();
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.as_slice().into(),
                    create_revision: prev.as_ref().map_or(*rev, |p| p.create_revision),
                    mod_revision: *rev,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                };
                self.keys.insert(key.clone(), kv.clone());
                self.rev = *rev;
                Some(Event {
                    kind: EventKind::Put,
                    kv,
                    prev,
                })
            }
            Record::Delete { rev, key } => {
                let prev = self.keys.remove(key);
                self.rev = *rev;
                let kv = KeyValue {
                    key: key.clone(),
                    value: Vec::new().into(),
                    create_revision: 0,
                    mod_revision: *rev,
                    version: 0,
                };
                Some(Event {
                    kind: EventKind::Delete,
                    kv,
                    prev,
                })
            }
            Record::Compact { rev } => {
                self.compact_to(*rev);
                None
            }
        }
    }

    fn compact_to(&mut self, rev: i64) {
        self.compacted = self.compacted.max(rev);
        while self
            .history
            .front()
            .is_some_and(|e| e.revision() <= self.compacted)
        {
            self.history.pop_front();
        }
    }
}

impl Embedded {
    /// Open (or create) a store in `dir`: load the snapshot, replay the WAL.
    pub fn open(dir: impl AsRef<Path>) -> Result<Embedded, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("create {}: {e}", dir.display())))?;
        let mut state: State = match std::fs::read(dir.join("snapshot.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(StoreError::Io(format!("read snapshot: {e}"))),
        };
        // History is kept in memory only: what came before the snapshot is gone, so a
        // watch or read from before it must get 410 rather than miss events.
        state.compacted = state.compacted.max(state.rev);
        let (wal, records, torn) = Wal::open(&dir.join("wal"))?;
        for r in &records {
            let rev = match r {
                Record::Put { rev, .. } | Record::Delete { rev, .. } => *rev,
                Record::Compact { .. } => state.rev,
            };
            if rev <= state.rev && state.rev > 0 && !matches!(r, Record::Compact { .. }) {
                continue; // already in the snapshot
            }
            if let Some(ev) = state.apply(r) {
                state.history.push_back(ev);
            }
        }
        let rev = state.rev;
        if let Some(t) = torn {
            // Never acknowledged nor seen (nothing is visible before its fsync), so the
            // revisions it held may be handed out again.
            tracing::warn!(
                dir = %dir.display(),
                offset = t.offset,
                cut_bytes = t.cut,
                reason = t.why,
                recovered_revision = rev,
                "WAL tail torn (a write in progress when the process died): cut off; recovered up to the last intact record"
            );
        }
        Ok(Embedded {
            inner: Arc::new(Inner {
                dir,
                state: Mutex::new(state),
                watchers: Mutex::new(Vec::new()),
                commit: Mutex::new(Commit {
                    wal,
                    pending: Vec::new(),
                    pending_events: Vec::new(),
                    pending_rev: rev,
                    durable_rev: rev,
                    flushing: false,
                    failed: None,
                }),
                flushed: Condvar::new(),
            }),
        })
    }

    /// The current revision (durable: everything up to it is flushed).
    pub fn revision(&self) -> Result<i64, StoreError> {
        let rev = self.inner.state.lock().unwrap().rev;
        self.wait_durable(rev)?;
        Ok(rev)
    }

    /// The revision every watcher has been handed all events up to.
    fn durable_revision(&self) -> i64 {
        self.inner.commit.lock().unwrap().durable_rev
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.inner.commit.lock().unwrap().failed {
            Some(f) => Err(StoreError::Io(f.clone())),
            None => Ok(()),
        }
    }

    pub fn compacted_revision(&self) -> i64 {
        self.inner.state.lock().unwrap().compacted
    }

    /// The key's value, once the state it was read from is durable.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let (kv, rev) = {
            let s = self.inner.state.lock().unwrap();
            (s.keys.get(key).cloned(), s.rev)
        };
        self.wait_durable(rev)?;
        Ok(kv)
    }

    /// A page of keys, at a past revision if asked: the current keys with the changes
    /// made since undone (each change carries the value before it). Costs the page plus
    /// the changes since `at` in the range, not the whole prefix.
    pub fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        at: i64,
    ) -> Result<Page, StoreError> {
        use std::ops::Bound;
        let page = {
            let s = self.inner.state.lock().unwrap();
            let rev = if at == 0 { s.rev } else { at };
            if rev < s.compacted {
                return Err(StoreError::Compacted {
                    requested: rev,
                    compacted: s.compacted,
                });
            }
            if rev > s.rev {
                return Err(StoreError::Timeout(format!(
                    "too large resource version: {rev}, current: {}",
                    s.rev
                )));
            }
            let end = prefix_end(prefix);
            let lower = match after {
                Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
                _ => Bound::Included(prefix.to_string()),
            };
            let in_range =
                |k: &str| k.starts_with(prefix) && after.is_none_or(|a| k > a) && k < end.as_str();
            // Keys changed after `rev`: their value at `rev` (None: absent then). The
            // oldest change after `rev` holds it, so older changes overwrite newer ones.
            let mut then: BTreeMap<&str, Option<&KeyValue>> = BTreeMap::new();
            for e in s.history.iter().rev().take_while(|e| e.revision() > rev) {
                if in_range(&e.kv.key) {
                    then.insert(e.kv.key.as_str(), e.prev.as_ref());
                }
            }
            let now = s
                .keys
                .range::<String, _>((lower, Bound::Excluded(end.clone())))
                .map(|(k, v)| (k.as_str(), Some(v)))
                .filter(|(k, _)| !then.contains_key(k));
            let mut merged =
                merge_sorted(now, then.iter().map(|(k, v)| (*k, *v))).filter_map(|(_, v)| v);
            let kvs: Vec<KeyValue> = match limit {
                0 => merged.by_ref().cloned().collect(),
                n => merged.by_ref().take(n).cloned().collect(),
            };
            Page {
                kvs,
                revision: rev,
                // The rest is counted, not copied.
                remaining: merged.count() as i64,
            }
        };
        self.wait_durable(page.revision)?;
        Ok(page)
    }

    /// Put `value` at `key` if `pre` holds; returns the new KeyValue once durable.
    pub fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<KeyValue, StoreError> {
        let (ev, rev) = self.write(|s| {
            check(pre, key, s.keys.get(key))?;
            Ok(Record::Put {
                rev: s.rev + 1,
                key: key.into(),
                value,
            })
        })?;
        self.wait_durable(rev)?;
        Ok(ev.kv)
    }

    /// Delete `key` if `pre` holds; returns the deleted value once durable.
    pub fn delete(&self, key: &str, pre: Precondition) -> Result<KeyValue, StoreError> {
        let (ev, rev) = self.write(|s| {
            check(pre, key, s.keys.get(key))?;
            if !s.keys.contains_key(key) {
                return Err(StoreError::NotFound(key.into()));
            }
            Ok(Record::Delete {
                rev: s.rev + 1,
                key: key.into(),
            })
        })?;
        self.wait_durable(rev)?;
        Ok(ev.prev.expect("delete of an existing key"))
    }

    /// Validate and apply under the state lock (which orders revisions), queue the
    /// record for the WAL and notify watchers.
    fn write(
        &self,
        make: impl FnOnce(&State) -> Result<Record, StoreError>,
    ) -> Result<(Event, i64), StoreError> {
        let mut s = self.inner.state.lock().unwrap();
        let rec = make(&s)?;
        let ev = s.apply(&rec).expect("writes produce events");
        s.history.push_back(ev.clone());
        let rev = s.rev;
        let mut c = self.inner.commit.lock().unwrap();
        rec.encode(&mut c.pending);
        c.pending_events.push(ev.clone());
        c.pending_rev = rev;
        Ok((ev, rev))
    }

    /// Block until `rev` is in the fsync'd WAL, flushing ourselves if nobody is.
    fn wait_durable(&self, rev: i64) -> Result<(), StoreError> {
        let mut c = self.inner.commit.lock().unwrap();
        loop {
            if let Some(f) = &c.failed {
                return Err(StoreError::Io(f.clone()));
            }
            if c.durable_rev >= rev {
                return Ok(());
            }
            if c.flushing {
                c = self.inner.flushed.wait(c).unwrap();
                continue;
            }
            // Become the flusher for everything pending so far.
            let batch = std::mem::take(&mut c.pending);
            let events = std::mem::take(&mut c.pending_events);
            let upto = c.pending_rev;
            c.flushing = true;
            // Write without holding the lock so other writers can queue behind us.
            let mut wal = std::mem::replace(&mut c.wal, Wal::placeholder());
            drop(c);
            let res = wal.append_sync(&batch);
            // Durable: publish to watchers, in revision order (one flusher at a time),
            // and move the durable mark in the same critical section, so a watch that
            // starts meanwhile replays up to the mark and gets the rest from here.
            let mut ws = self.inner.watchers.lock().unwrap();
            c = self.inner.commit.lock().unwrap();
            c.wal = wal;
            c.flushing = false;
            match res {
                Ok(()) => {
                    for ev in &events {
                        ws.retain(|w| {
                            !ev.kv.key.starts_with(&w.prefix) || w.tx.send(Ok(ev.clone())).is_ok()
                        });
                    }
                    c.durable_rev = c.durable_rev.max(upto);
                }
                Err(e) => {
                    // The writes are lost to everyone: watchers learn their stream is
                    // broken rather than wait for events that will never come.
                    let err = e.to_string();
                    for w in ws.drain(..) {
                        let _ = w.tx.send(Err(StoreError::Io(err.clone())));
                    }
                    c.failed = Some(err);
                }
            }
            drop(ws);
            self.inner.flushed.notify_all();
        }
    }

    /// Watch keys under `prefix` for events after revision `from` (0: from now on).
    /// Events still in history are replayed first; older ones are gone (410 Gone).
    pub fn watch_many(&self, prefixes: &[&str], from: i64) -> Result<Watch, StoreError> {
        let mut ws = self.inner.watchers.lock().unwrap();
        let s = self.inner.state.lock().unwrap();
        let durable = self.durable_revision();
        if from > 0 && from < s.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: s.compacted,
            });
        }
        let (tx, rx) = flume::unbounded();
        if from > 0 {
            for e in s
                .history
                .iter()
                .filter(|e| e.revision() > from && e.revision() <= durable)
                .filter(|e| prefixes.iter().any(|p| e.kv.key.starts_with(p)))
            {
                let _ = tx.send(Ok(e.clone()));
            }
        }
        for p in prefixes {
            ws.push(Watcher {
                prefix: p.to_string(),
                tx: tx.clone(),
            });
        }
        Ok(Watch::new(rx, Vec::new()))
    }

    /// Forget history up to `rev`, write a snapshot and start a new WAL.
    pub fn compact(&self, rev: i64) -> Result<(), StoreError> {
        let mut s = self.inner.state.lock().unwrap();
        if rev > s.rev {
            return Err(StoreError::Io(format!(
                "cannot compact to future revision {rev} (current {})",
                s.rev
            )));
        }
        s.compact_to(rev);
        // Everything applied must be durable before the WAL is replaced by the snapshot.
        let current = s.rev;
        drop(s);
        self.wait_durable(current)?;
        let s = self.inner.state.lock().unwrap();
        let mut c = self.inner.commit.lock().unwrap();
        // A flush in progress has the WAL out: let it finish before replacing the WAL.
        while c.flushing {
            c = self.inner.flushed.wait(c).unwrap();
        }
        let snap = serde_json::to_vec(&*s).map_err(|e| StoreError::Io(e.to_string()))?;
        let tmp = self.inner.dir.join("snapshot.json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &snap)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.inner.dir.join("snapshot.json"))?;
            std::fs::File::open(&self.inner.dir)?.sync_all()
        };
        write().map_err(|e| StoreError::Io(format!("write snapshot: {e}")))?;
        // Records queued after the snapshot's revision stay pending and go to the new WAL.
        c.wal.truncate()
    }
}

impl Wal {
    /// Stand-in while the real WAL is out being written to.
    fn placeholder() -> Wal {
        Wal::from_file(std::fs::File::open("/dev/null").expect("/dev/null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn revisions_and_preconditions() {
        let d = tmp("rev");
        let s = Store::open(&d).unwrap();
        let a = s
            .put("/pods/a", b"1".to_vec(), Precondition::Absent)
            .unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 1, 1));
        assert_eq!(
            s.put("/pods/a", b"x".to_vec(), Precondition::Absent),
            Err(StoreError::AlreadyExists("/pods/a".into()))
        );
        let a2 = s
            .put("/pods/a", b"2".to_vec(), Precondition::Revision(1))
            .unwrap();
        assert_eq!((a2.create_revision, a2.mod_revision, a2.version), (1, 2, 2));
        let stale = s
            .put("/pods/a", b"3".to_vec(), Precondition::Revision(1))
            .unwrap_err();
        assert_eq!(
            stale,
            StoreError::Conflict {
                key: "/pods/a".into(),
                expected: 1,
                actual: 2
            }
        );
        s.put("/pods/b", b"b".to_vec(), Precondition::None).unwrap();
        s.put("/svc/x", b"x".to_vec(), Precondition::None).unwrap();
        let (pods, rev) = s.list("/pods/").unwrap();
        assert_eq!(
            pods.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/pods/a", "/pods/b"]
        );
        assert_eq!(rev, 4);
        assert_eq!(
            s.delete("/pods/a", Precondition::Revision(1)).unwrap_err(),
            StoreError::Conflict {
                key: "/pods/a".into(),
                expected: 1,
                actual: 2
            }
        );
        assert_eq!(
            s.delete("/pods/a", Precondition::None).unwrap().value[..],
            b"2"[..]
        );
        assert_eq!(
            s.delete("/pods/a", Precondition::None),
            Err(StoreError::NotFound("/pods/a".into()))
        );
        assert!(s.get("/pods/a").unwrap().is_none());
        // Re-created keys start a new life.
        let again = s
            .put("/pods/a", b"n".to_vec(), Precondition::Absent)
            .unwrap();
        assert_eq!((again.create_revision, again.version), (6, 1));
        drop(s);
        let s = Store::open(&d).unwrap();
        assert_eq!(s.revision().unwrap(), 6, "replayed from the WAL");
        assert_eq!(s.get("/pods/a").unwrap().unwrap().create_revision, 6);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn watch_replays_history_and_follows() {
        let d = tmp("watch");
        let s = Store::open(&d).unwrap();
        s.put("/pods/a", b"1".to_vec(), Precondition::None).unwrap();
        s.put("/nodes/n", b"n".to_vec(), Precondition::None)
            .unwrap();
        s.put("/pods/a", b"2".to_vec(), Precondition::None).unwrap();
        let w = s.watch("/pods/", 1).unwrap();
        s.delete("/pods/a", Precondition::None).unwrap();
        let got: Vec<(EventKind, i64)> = w
            .drain()
            .unwrap()
            .iter()
            .map(|e| (e.kind, e.revision()))
            .collect();
        assert_eq!(
            got,
            [(EventKind::Put, 3), (EventKind::Delete, 4)],
            "history after rev 1, then live, /nodes filtered out"
        );
        s.compact(3).unwrap();
        assert_eq!(
            s.watch("/pods/", 2).err(),
            Some(StoreError::Compacted {
                requested: 2,
                compacted: 3
            })
        );
        let w = s.watch("/pods/", 3).unwrap();
        assert_eq!(
            w.drain()
                .unwrap()
                .iter()
                .map(|e| e.revision())
                .collect::<Vec<_>>(),
            [4]
        );
        s.put("/pods/c", b"c".to_vec(), Precondition::None).unwrap();
        drop(s);
        // After compaction the state comes from the snapshot plus the new WAL.
        let s = Store::open(&d).unwrap();
        assert_eq!(s.revision().unwrap(), 5);
        // The snapshot was taken at revision 4: history before it is not kept.
        assert_eq!(s.compacted_revision(), 4);
        assert_eq!(s.list("/").unwrap().0.len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pages_at_a_past_revision() {
        let d = tmp("range");
        let s = Store::open(&d).unwrap();
        for k in ["a", "b", "c", "d"] {
            s.put(&format!("/p/{k}"), k.into(), Precondition::None)
                .unwrap();
        }
        s.put("/q/x", b"x".to_vec(), Precondition::None).unwrap();
        let first = s.range("/p/", None, 2, 0).unwrap();
        let keys = |p: &Page| p.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&first), ["/p/a", "/p/b"]);
        assert_eq!((first.revision, first.remaining), (5, 2));
        // Changes after the first page: the next page still shows revision 5.
        s.delete("/p/c", Precondition::None).unwrap();
        s.put("/p/bb", b"new".to_vec(), Precondition::None).unwrap();
        s.put("/p/d", b"D".to_vec(), Precondition::None).unwrap();
        let next = s.range("/p/", Some("/p/b"), 2, first.revision).unwrap();
        assert_eq!(keys(&next), ["/p/c", "/p/d"]);
        assert_eq!(next.kvs[1].value[..], b"d"[..]);
        assert_eq!(next.remaining, 0);
        // Now: the current keys.
        let now = s.range("/p/", Some("/p/b"), 0, 0).unwrap();
        assert_eq!(keys(&now), ["/p/bb", "/p/d"]);
        assert_eq!(now.kvs[1].value[..], b"D"[..]);
        // Compacted: gone; from the future: refused.
        s.compact(7).unwrap();
        assert!(matches!(
            s.range("/p/", None, 2, 5),
            Err(StoreError::Compacted { .. })
        ));
        assert!(matches!(
            s.range("/p/", None, 2, 99),
            Err(StoreError::Timeout(_))
        ));
        // After a restart, history older than the snapshot is gone too.
        s.put("/p/e", b"e".to_vec(), Precondition::None).unwrap();
        drop(s);
        let s = Store::open(&d).unwrap();
        assert!(matches!(
            s.range("/p/", None, 0, 7),
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(s.range("/p/", None, 0, 8).unwrap().kvs.len(), 4);
        assert_eq!(s.range("/p/", None, 0, 9).unwrap().kvs.len(), 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_writers_share_fsyncs() {
        let d = tmp("conc");
        let s = Store::open(&d).unwrap();
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        s.put(&format!("/k/{t}/{i}"), vec![1], Precondition::None)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(s.revision().unwrap(), 400);
        drop(s);
        assert_eq!(Store::open(&d).unwrap().list("/k/").unwrap().0.len(), 400);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
