//! The scheduler as kube-scheduler runs it: a cache of nodes and of the pods placed on
//! them, kept up to date by a watch (one list at start and after a lost watch, then
//! events), a queue of pods waiting for a node, and binds through the pods/binding path.
//! A placement is assumed in the cache at once and the bind runs on a worker, so the
//! next pod is placed while the last one is written; a bind that fails is forgotten
//! and the pod queued again. Unschedulable pods get PodScheduled=False with kube's
//! message and a FailedScheduling event, and are tried again when nodes change.

use super::*;
use crate::apiserver::objects::bind_pod;
use crate::scheduler::Scheduler;
use crate::store::EventKind;
use k8s_openapi::api::core::v1::Pod;
use skiff_apimachinery::trace::Step;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const NODES: &str = "/registry/core/nodes/";
const PODS: &str = "/registry/core/pods/";
/// Binds in flight at once (kube-scheduler binds in goroutines).
const BINDERS: usize = 16;
/// Unschedulable pods are tried again at least this often.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(30);

/// A pod's place in the cache.
struct Placed {
    node: String,
    pod: Pod,
    /// Placed by us, bind not yet seen in the store.
    assumed: bool,
}

/// What the scheduler knows, from its watch.
#[derive(Default)]
struct Cache {
    sched: Scheduler,
    /// Pods counted on nodes (bound, or assumed while their bind runs), by store key.
    placed: HashMap<String, Placed>,
    /// Pods waiting for a node, as last seen.
    pending: HashMap<String, Value>,
    /// The order they are tried in.
    queue: VecDeque<String>,
    /// Pods no node fits; tried again when nodes change.
    unschedulable: HashSet<String>,
}

struct BindJob {
    key: String,
    ns: String,
    name: String,
    node: String,
    pod: Value,
    /// When the scheduler took the pod up, and how it chose (for the Scheduled event).
    start: std::time::SystemTime,
    detail: String,
}

/// What ended a wait.
enum Woke {
    Store(Result<crate::store::Event, StoreError>),
    Bind(BindResult),
    Idle,
}

enum BindResult {
    Bound,
    /// The pod changed or went meanwhile: the watch tells what it is now.
    Lost(String, String),
    /// The store failed: try again later.
    Failed(String, String),
}

fn finished(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

fn pod_name(p: &Value) -> (String, String) {
    (
        p["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

impl Cache {
    /// Everything from a fresh list.
    fn load(store: &Store) -> Result<(Cache, i64), StoreError> {
        let (nodes, rev) = store.list(NODES)?;
        let mut c = Cache::default();
        for kv in &nodes {
            c.node_put(&decode(kv));
        }
        let page = store.range(PODS, None, 0, rev)?;
        for kv in &page.kvs {
            c.pod_put(&kv.key, decode(kv));
        }
        Ok((c, rev))
    }

    fn node_put(&mut self, n: &Value) {
        if let Ok(node) = serde_json::from_value(n.clone()) {
            self.sched.upsert_node(node);
        }
        // A node came or changed: pods that fit nowhere may fit now.
        for k in self.unschedulable.drain() {
            if self.pending.contains_key(&k) {
                self.queue.push_back(k);
            }
        }
    }

    fn pod_put(&mut self, key: &str, p: Value) {
        let bound = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
        // Counted where it is (finished pods hold nothing, as kube-scheduler's informer
        // leaves them out).
        let counts = bound.is_some() && !finished(&p);
        let stale = self
            .placed
            .get(key)
            .is_some_and(|pl| !counts || Some(pl.node.as_str()) != bound);
        if stale {
            self.forget(key);
        } else if let Some(pl) = self.placed.get_mut(key) {
            // Our bind, as the store has it now.
            pl.assumed = false;
        }
        if counts && !self.placed.contains_key(key) {
            if let Ok(pod) = serde_json::from_value::<Pod>(p.clone()) {
                let node = bound.unwrap_or_default().to_string();
                self.sched.assume(&pod, &node);
                self.placed.insert(
                    key.to_string(),
                    Placed {
                        node,
                        pod,
                        assumed: false,
                    },
                );
            }
        }
        let waits =
            bound.is_none() && p["metadata"]["deletionTimestamp"].is_null() && !finished(&p);
        if waits {
            if self.pending.insert(key.to_string(), p).is_none()
                && !self.unschedulable.contains(key)
            {
                self.queue.push_back(key.to_string());
            }
        } else {
            self.pending.remove(key);
            self.unschedulable.remove(key);
        }
    }

    fn pod_delete(&mut self, key: &str) {
        self.forget(key);
        self.pending.remove(key);
        self.unschedulable.remove(key);
    }

    /// Undo our placement of a pod whose bind did not happen (a placement the store has
    /// confirmed or replaced since is left alone).
    fn unassume(&mut self, key: &str) {
        if self.placed.get(key).is_some_and(|p| p.assumed) {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some(pl) = self.placed.remove(key) {
            self.sched.forget(&pl.pod, &pl.node);
        }
    }

    fn apply(&mut self, ev: &crate::store::Event) {
        let key = ev.kv.key.as_str();
        match (ev.kind, key.starts_with(NODES)) {
            (EventKind::Put, true) => self.node_put(&decode(&ev.kv)),
            (EventKind::Delete, true) => {
                self.sched.remove_node(key.trim_start_matches(NODES));
            }
            (EventKind::Put, false) => self.pod_put(key, decode(&ev.kv)),
            (EventKind::Delete, false) => self.pod_delete(key),
        }
    }

    /// Place every queued pod: assumed here, bound by the workers.
    fn schedule(&mut self, store: &Store, binds: &flume::Sender<BindJob>) {
        while let Some(key) = self.queue.pop_front() {
            let Some(p) = self.pending.get(&key).cloned() else {
                continue; // bound or gone since it was queued
            };
            if self.placed.contains_key(&key) {
                continue; // its bind is running
            }
            let Ok(pod) = serde_json::from_value::<Pod>(p.clone()) else {
                continue;
            };
            let (ns, name) = pod_name(&p);
            let start = std::time::SystemTime::now();
            match self.sched.place(&pod) {
                Ok(placement) => {
                    let node = placement.node.clone();
                    tracing::debug!(pod = %format!("{ns}/{name}"), node = %node, "scheduled");
                    self.sched.assume(&pod, &node);
                    self.placed.insert(
                        key.clone(),
                        Placed {
                            node: node.clone(),
                            pod,
                            assumed: true,
                        },
                    );
                    let _ = binds.send(BindJob {
                        key,
                        ns,
                        name,
                        node,
                        pod: p,
                        start,
                        detail: placement.to_string(),
                    });
                }
                Err(e) => {
                    tracing::debug!(pod = %format!("{ns}/{name}"), reason = %e, "unschedulable");
                    self.unschedulable.insert(key.clone());
                    if let Err(err) = mark_unschedulable(store, &key, &p, &e.to_string()) {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %err, "cannot record that the pod is unschedulable");
                    }
                }
            }
        }
    }
}

/// PodScheduled=False with the reason, and a FailedScheduling event, once per message.
fn mark_unschedulable(store: &Store, key: &str, p: &Value, msg: &str) -> Result<(), StoreError> {
    let same = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["message"] == msg);
    if same {
        return Ok(());
    }
    record_event(
        store,
        p,
        "Warning",
        "FailedScheduling",
        msg,
        "default-scheduler",
    );
    let mut next = p.clone();
    let mut conds: Vec<Value> = p["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conds.retain(|c| c["type"] != "PodScheduled");
    conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
    next["status"]["conditions"] = json!(conds);
    update_status_as(store, key, &next, "default-scheduler").map(drop)
}

/// A bind worker: pods/binding for each job, then the Scheduled event.
fn binder(store: Store, jobs: flume::Receiver<BindJob>, done: flume::Sender<BindResult>) {
    for j in jobs.iter() {
        let r = match bind_pod(&store, &j.ns, &j.name, &j.node, "default-scheduler") {
            Ok(_) => {
                let msg = format!("Successfully assigned {}/{} to {}", j.ns, j.name, j.node);
                let step = Step::since(j.start).with_detail(j.detail);
                record_step(
                    &store,
                    &j.pod,
                    "Scheduled",
                    &msg,
                    "default-scheduler",
                    &step,
                );
                BindResult::Bound
            }
            Err(e) if e.code.is_server_error() => BindResult::Failed(j.key, e.message),
            Err(e) => BindResult::Lost(j.key, e.message),
        };
        if done.send(r).is_err() {
            return;
        }
    }
}

/// Run the scheduler while `lead` says so.
pub fn run(store: Store, lead: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            let (jobs_tx, jobs_rx) = flume::unbounded::<BindJob>();
            let (done_tx, done_rx) = flume::unbounded::<BindResult>();
            for i in 0..BINDERS {
                let (store, jobs, done) = (store.clone(), jobs_rx.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("binder-{i}"))
                    .spawn(move || binder(store, jobs, done))
                    .expect("spawn binder");
            }
            let mut retry = Duration::ZERO;
            loop {
                // (Re)start from a list; a watch from its revision keeps the cache.
                let started = Cache::load(&store).and_then(|(c, rev)| {
                    let w = store.watch_many(&[NODES, PODS], rev)?;
                    Ok((c, w))
                });
                let (mut cache, w) = match started {
                    Ok(x) => x,
                    Err(e) => {
                        retry = (retry * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                        tracing::warn!(error = %e, retry_in = ?retry, "scheduler cannot read the cluster");
                        std::thread::sleep(retry);
                        continue;
                    }
                };
                retry = Duration::ZERO;
                let mut was_leading = lead.load(Ordering::SeqCst);
                let mut last_retry = Instant::now();
                let lost = loop {
                    let leading = lead.load(Ordering::SeqCst);
                    if leading && !was_leading {
                        // Taken over: start from what the store says, not what we assumed.
                        break None;
                    }
                    was_leading = leading;
                    if leading {
                        if last_retry.elapsed() >= RETRY_UNSCHEDULABLE {
                            last_retry = Instant::now();
                            let again: Vec<String> = cache.unschedulable.drain().collect();
                            cache.queue.extend(again);
                        }
                        cache.schedule(&store, &jobs_tx);
                    }
                    // Wait for an event or a bind's outcome (or a second, to look at
                    // the lease and the retry timer), then take everything that came.
                    let first = flume::Selector::new()
                        .recv(w.receiver(), |r| match r {
                            Ok(x) => Woke::Store(x),
                            Err(_) => Woke::Store(Err(StoreError::Unavailable(
                                "the store ended the watch".into(),
                            ))),
                        })
                        .recv(&done_rx, |r| match r {
                            Ok(b) => Woke::Bind(b),
                            Err(_) => Woke::Idle,
                        })
                        .wait_timeout(Duration::from_secs(1))
                        .unwrap_or(Woke::Idle);
                    let mut events = Vec::new();
                    let mut outcomes = Vec::new();
                    match first {
                        Woke::Store(r) => events.push(r),
                        Woke::Bind(b) => outcomes.push(b),
                        Woke::Idle => {}
                    }
                    while let Ok(r) = w.receiver().try_recv() {
                        events.push(r);
                    }
                    outcomes.extend(done_rx.try_iter());
                    let mut failed = None;
                    for r in events {
                        match r {
                            Ok(ev) => cache.apply(&ev),
                            Err(e) => failed = Some(e),
                        }
                    }
                    for b in outcomes {
                        match b {
                            BindResult::Bound => {}
                            BindResult::Lost(key, why) => {
                                tracing::debug!(pod = %key, reason = %why, "bind lost a race");
                                cache.unassume(&key);
                            }
                            BindResult::Failed(key, why) => {
                                tracing::warn!(pod = %key, error = %why, "bind failed; the pod is queued again");
                                cache.unassume(&key);
                                if cache.pending.contains_key(&key) {
                                    cache.queue.push_back(key);
                                }
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                    }
                    if failed.is_some() {
                        break failed;
                    }
                };
                if let Some(e) = lost {
                    tracing::warn!(error = %e, "scheduler watch ended; reading the cluster again");
                }
            }
        })
        .expect("spawn scheduler")
}
