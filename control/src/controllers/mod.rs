//! The controller manager: controllers that make actual state equal desired state —
//! Deployment → ReplicaSet → Pods, StatefulSets, DaemonSets, Jobs and CronJobs,
//! Endpoints/EndpointSlices, namespaces, garbage collection by ownerReferences (each a
//! controller of keys: [`controller`]), node lifecycle, IPAM and pod GC (one periodic
//! loop, as their work is on time), and the scheduler.

mod certificates;
mod controller;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod gc;
mod job;
pub mod leader;
mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
mod queue;
mod reflector;
mod replicaset;
mod scheduling;
mod statefulset;
mod view;

use crate::apiserver::objects::{decode, now_rfc3339, random_hex};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::time::Duration;

/// Pods under a prefix with only the fields controller passes read ([`view::pod_fields`]):
/// for looking at, never for writing back.
pub(crate) fn list_pods(store: &Store, prefix: &str) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .list(prefix)?
        .0
        .iter()
        .map(|kv| view::masked(kv, view::pod_fields()))
        .collect())
}

pub(crate) fn key_of(o: &Value, group: &str, plural: &str) -> String {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    match o["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        Some(ns) => format!("/registry/{group}/{plural}/{ns}/{name}"),
        None => format!("/registry/{group}/{plural}/{name}"),
    }
}

/// The API context for a write to the object at store `key` by `manager` (the field
/// manager its managedFields name), and the object's name.
fn ctx_for<'a>(
    store: &'a Store,
    key: &'a str,
    manager: &'a str,
) -> (crate::apiserver::objects::Ctx<'a>, &'a str) {
    let segs: Vec<&str> = key.trim_start_matches("/registry/").split('/').collect();
    let (group, plural) = (segs[0], segs[1]);
    let api_group = if group == "core" { "" } else { group };
    let r = crate::apiserver::resources::find(api_group, "v1", plural)
        .unwrap_or_else(|| panic!("controllers write served kinds: {key}"));
    let (ns, name) = match (r.namespaced, segs.len()) {
        (true, 4) => (Some(segs[2]), segs[3]),
        _ => (None, segs[segs.len() - 1]),
    };
    let c = crate::apiserver::objects::Ctx {
        store,
        r,
        ns,
        table: false,
        manager,
        dry_run: false,
        validation: crate::apiserver::objects::FieldValidation::Ignore,
        warnings: Default::default(),
        user: None,
    };
    (c, name)
}

/// Write `o`'s spec and metadata back through the API's update path (its status is the
/// store's), guarded by its resourceVersion. The object as written, or None if it
/// changed or went meanwhile: the next round sees the newer state.
pub(crate) fn update(store: &Store, key: &str, o: &Value) -> Result<Option<Value>, StoreError> {
    replace(store, key, o, false, CONTROLLER_MANAGER)
}

/// The field manager of the controllers' writes, as kube's.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// An update under another field manager (the scheduler's lease is kube-scheduler's).
pub(crate) fn update_as(
    store: &Store,
    key: &str,
    o: &Value,
    manager: &str,
) -> Result<Option<Value>, StoreError> {
    replace(store, key, o, false, manager)
}

/// Write `o`'s status back through the API's status path.
pub(crate) fn update_status(
    store: &Store,
    key: &str,
    o: &Value,
) -> Result<Option<Value>, StoreError> {
    replace(store, key, o, true, CONTROLLER_MANAGER)
}

/// A status write under another field manager (the scheduler's is default-scheduler).
pub(crate) fn update_status_as(
    store: &Store,
    key: &str,
    o: &Value,
    manager: &str,
) -> Result<Option<Value>, StoreError> {
    replace(store, key, o, true, manager)
}

fn replace(
    store: &Store,
    key: &str,
    o: &Value,
    status: bool,
    manager: &str,
) -> Result<Option<Value>, StoreError> {
    let (c, name) = ctx_for(store, key, manager);
    match crate::apiserver::objects::replace_value(&c, name, o, status) {
        Ok(v) => {
            controller::note_written(key, &v);
            Ok(Some(v))
        }
        Err(e) => match api_error(e) {
            StoreError::Conflict { .. } | StoreError::NotFound(_) => Ok(None),
            e => Err(e),
        },
    }
}

/// Delete the object at `key` through the API's delete (Background propagation: a pod
/// on a node gets its grace period, `grace` or its own; an object with finalizers is
/// marked and waits for them). False if it changed meanwhile (the next round sees it);
/// true if it is gone already.
pub(crate) fn delete(store: &Store, key: &str, grace: Option<i64>) -> Result<bool, StoreError> {
    delete_with(
        store,
        key,
        crate::apiserver::objects::DeleteOptions {
            grace,
            ..Default::default()
        },
    )
}

/// Delete `o` (as listed) unless it changed since (its resourceVersion as precondition).
pub(crate) fn delete_unchanged(store: &Store, key: &str, o: &Value) -> Result<bool, StoreError> {
    delete_with(
        store,
        key,
        crate::apiserver::objects::DeleteOptions {
            resource_version: o["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok()),
            ..Default::default()
        },
    )
}

fn delete_with(
    store: &Store,
    key: &str,
    o: crate::apiserver::objects::DeleteOptions,
) -> Result<bool, StoreError> {
    let (c, name) = ctx_for(store, key, CONTROLLER_MANAGER);
    match crate::apiserver::objects::delete_with(&c, name, &o) {
        Ok(_) => {
            controller::note_deleting(key);
            Ok(true)
        }
        Err(e) => match api_error(e) {
            StoreError::NotFound(_) => Ok(true),
            StoreError::Conflict { .. } => Ok(false),
            e => Err(e),
        },
    }
}

/// Take the namespace controller's finalizer ("kubernetes") out of an emptied
/// namespace's spec.finalizers through the API's finalize, which removes the
/// terminating namespace once no finalizer is left.
pub(crate) fn finalize(store: &Store, key: &str) -> Result<(), StoreError> {
    let (c, name) = ctx_for(store, key, CONTROLLER_MANAGER);
    let without_ours = |fins: &Value| {
        let left: Vec<&Value> = fins
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| *f != "kubernetes")
            .collect();
        json!(left)
    };
    match crate::apiserver::objects::finalize_value(&c, name, without_ours) {
        Ok(_) => Ok(()),
        Err(e) => match api_error(e) {
            StoreError::NotFound(_) | StoreError::Conflict { .. } => Ok(()),
            e => Err(e),
        },
    }
}

/// Set a CertificateSigningRequest's verdict through the API's approval subresource.
pub(crate) fn approve(store: &Store, key: &str, conditions: &Value) -> Result<(), StoreError> {
    let (c, name) = ctx_for(store, key, CONTROLLER_MANAGER);
    match crate::apiserver::objects::approve_value(&c, name, conditions) {
        Ok((v, _)) => {
            controller::note_written(key, &v);
            Ok(())
        }
        Err(e) => match api_error(e) {
            StoreError::NotFound(_) | StoreError::Conflict { .. } => Ok(()),
            e => Err(e),
        },
    }
}

/// The API's answer to a controller's write, as the store error it stands for.
fn api_error(e: crate::apiserver::status::ApiError) -> StoreError {
    match (e.code.as_u16(), e.reason) {
        (409, "AlreadyExists") => StoreError::AlreadyExists(e.message),
        (409, _) => StoreError::Conflict {
            key: e.message,
            expected: 0,
            actual: 0,
        },
        (404, _) => StoreError::NotFound(e.message),
        (503, _) => StoreError::Unavailable(e.message),
        (504, _) => StoreError::Timeout(e.message),
        (410, _) => StoreError::Compacted {
            requested: 0,
            compacted: 0,
        },
        (code, _) if code >= 500 => StoreError::Io(e.message),
        _ => StoreError::Invalid(e.message),
    }
}

/// Create `o` (named, or from its generateName) through the API's create path, as
/// kube-controller-manager; None if the name was taken meanwhile.
pub(crate) fn create(
    store: &Store,
    group: &str,
    plural: &str,
    o: Value,
) -> Result<Option<Value>, StoreError> {
    create_as(store, group, plural, o, CONTROLLER_MANAGER)
}

/// A create under another field manager.
pub(crate) fn create_as(
    store: &Store,
    group: &str,
    plural: &str,
    o: Value,
    manager: &str,
) -> Result<Option<Value>, StoreError> {
    let api_group = if group == "core" { "" } else { group };
    let r = crate::apiserver::resources::find(api_group, "v1", plural)
        .unwrap_or_else(|| panic!("controllers create served kinds: {group}/{plural}"));
    let ns = o["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let c = crate::apiserver::objects::Ctx {
        store,
        r,
        ns: ns.as_deref().filter(|_| r.namespaced),
        table: false,
        manager,
        dry_run: false,
        validation: crate::apiserver::objects::FieldValidation::Ignore,
        warnings: Default::default(),
        user: None,
    };
    match crate::apiserver::objects::create_value(&c, o) {
        Ok(kv) => {
            let v = decode(&kv);
            controller::note_written(&kv.key, &v);
            Ok(Some(v))
        }
        Err(e) => match api_error(e) {
            StoreError::AlreadyExists(_) => Ok(None),
            e => Err(e),
        },
    }
}

/// Record an Event about `o` (what `kubectl describe` and `kubectl get events` show).
pub(crate) fn record_event(
    store: &Store,
    o: &Value,
    typ: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    post_event(store, o, typ, reason, message, component, None)
}

/// An Event that also carries a measured step of the object's path (`kubectl skiff
/// trace`): its start as eventTime, its duration and detail as annotations.
pub(crate) fn record_step(
    store: &Store,
    o: &Value,
    reason: &str,
    message: &str,
    component: &str,
    step: &skiff_apimachinery::trace::Step,
) {
    post_event(store, o, "Normal", reason, message, component, Some(step))
}

fn post_event(
    store: &Store,
    o: &Value,
    typ: &str,
    reason: &str,
    message: &str,
    component: &str,
    step: Option<&skiff_apimachinery::trace::Step>,
) {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let now = now_rfc3339();
    let mut ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"namespace": ns, "name": format!("{name}.{}", random_hex(8))},
        "involvedObject": {"apiVersion": o["apiVersion"], "kind": o["kind"], "namespace": ns, "name": name,
                           "uid": o["metadata"]["uid"], "resourceVersion": o["metadata"]["resourceVersion"]},
        "reason": reason, "message": message, "type": typ,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    if let Some(s) = step {
        ev["eventTime"] = json!(skiff_apimachinery::trace::micro_time(s.start));
        ev["metadata"]["annotations"] = json!(s.annotations());
    }
    // Events are best effort (as client-go's recorder): a lost one is logged, and the
    // action it reports goes on.
    if let Err(e) = create(store, "core", "events", ev) {
        tracing::warn!(kind = %o["kind"], namespace = ns, name, reason, error = %e, "event not recorded");
    }
}

/// Whether a pod reports Ready=True.
pub(crate) fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A new Pod from `owner`'s pod template: in its namespace, named after it, owned by it.
pub(crate) fn pod_from_template(owner: &Value, kind: &str, template: &Value) -> Value {
    let mut meta = match &template["metadata"] {
        Value::Null => json!({}),
        m => m.clone(),
    };
    meta["namespace"] = owner["metadata"]["namespace"].clone();
    meta["generateName"] = json!(format!(
        "{}-",
        owner["metadata"]["name"].as_str().unwrap_or("pod")
    ));
    let api_version = owner["apiVersion"].as_str().unwrap_or("apps/v1");
    meta["ownerReferences"] = json!([owner_ref(owner, api_version, kind)]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"], "status": {"phase": "Pending"}})
}

pub(crate) fn owner_ref(o: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": o["metadata"]["name"], "uid": o["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true})
}

pub(crate) fn controller_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

pub(crate) fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
}

/// Settings of the node controllers (lifecycle timing, pod CIDRs).
#[derive(Debug, Clone)]
pub struct Config {
    /// No Lease renewal for this long: the node is NotReady (kube's node-monitor-grace-period).
    pub node_grace: Duration,
    /// Eviction delay for pods without their own toleration (DefaultTolerationSeconds).
    pub eviction_default: Duration,
    /// A pod bound to a node that is missing this long is deleted (podgc's quarantine).
    pub pod_gc_quarantine: Duration,
    /// Pod CIDRs for nodes come from here (None: node IPAM is off).
    pub cluster_cidr: Option<String>,
    /// Size of each node's pod CIDR.
    pub node_cidr_mask: u8,
    /// Run the controller manager (every controller but the scheduler).
    pub controllers: bool,
    /// Run the scheduler.
    pub scheduler: bool,
    /// Run only while holding the component's Lease (several instances on one store).
    pub leader_elect: bool,
    /// This instance's name in the Leases.
    pub identity: String,
    /// The CA that signs approved CertificateSigningRequests (None: nothing is signed).
    pub signer: Option<std::sync::Arc<crate::pki::Pki>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_grace: Duration::from_secs(40),
            eviction_default: Duration::from_secs(300),
            pod_gc_quarantine: Duration::from_secs(40),
            cluster_cidr: Some("10.244.0.0/16".into()),
            node_cidr_mask: 24,
            controllers: true,
            scheduler: true,
            leader_elect: false,
            identity: format!(
                "{}_{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "skiff".into()),
                random_hex(8)
            ),
            signer: None,
        }
    }
}

/// What a pass asks for next (kube-rs' Action): nothing until something changes, or
/// another pass after a while (work that waits on time, not on an event).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    AwaitChange,
    Requeue(Duration),
}

/// Start every controller on its own thread, with default timings.
pub fn start(store: Store) -> Vec<std::thread::JoinHandle<()>> {
    start_with(store, Config::default())
}

pub fn start_with(store: Store, cfg: Config) -> Vec<std::thread::JoinHandle<()>> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    // Without leader election every part always runs; with it, each part runs while its
    // Lease is held (kube-controller-manager and kube-scheduler name theirs alike).
    let gate = |name: &str, handles: &mut Vec<std::thread::JoinHandle<()>>| -> Arc<AtomicBool> {
        if !cfg.leader_elect {
            return Arc::new(AtomicBool::new(true));
        }
        let e = leader::Elector::new(store.clone(), name, &cfg.identity, Duration::from_secs(15));
        let flag = e.flag();
        handles.push(e.run());
        flag
    };
    let mut handles = Vec::new();
    if cfg.controllers {
        let lead = gate("skiff-controller-manager", &mut handles);
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            deployment::Controller,
        ));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            replicaset::Controller,
        ));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            statefulset::Controller,
        ));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            daemonset::Controller,
        ));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            job::Controller,
        ));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            cronjob::Controller,
        ));
        handles.push(controller::run(store.clone(), lead.clone(), gc::Controller));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            namespace::Controller,
        ));
        handles.push(controller::run(
            store.clone(),
            lead.clone(),
            certificates::Controller {
                signer: cfg.signer.clone(),
            },
        ));
        handles.push(endpoints::run(store.clone(), lead.clone()));
        let store = store.clone();
        let cfg = cfg.clone();
        handles.push(
            std::thread::Builder::new()
                .name("node-lifecycle".into())
                .spawn(move || {
                    let mut orphans = podgc::Orphans::new();
                    let mut no_cidr = nodeipam::Reported::new();
                    let mut memory = nodelifecycle::Memory::new();
                    let mut retry = Retry::default();
                    // kube's node monitor period is 5 s with a 40 s grace: a tenth of
                    // the grace here (short graces in tests), 250 ms to 5 s. Pod GC runs
                    // every fourth of its quarantine, at most every 20 s (kube: 20 s).
                    let period = (cfg.node_grace / 10)
                        .clamp(Duration::from_millis(250), Duration::from_secs(5));
                    let gc_period =
                        (cfg.pod_gc_quarantine / 4).clamp(period, Duration::from_secs(20));
                    let mut last_gc = std::time::Instant::now() - gc_period;
                    loop {
                        if lead.load(std::sync::atomic::Ordering::SeqCst) {
                            let mut r = nodelifecycle::reconcile(&store, &cfg, &mut memory)
                                .and_then(|()| nodeipam::reconcile(&store, &cfg, &mut no_cidr));
                            if r.is_ok() && last_gc.elapsed() >= gc_period {
                                r = podgc::reconcile(&store, &cfg, &mut orphans);
                                if r.is_ok() {
                                    last_gc = std::time::Instant::now();
                                }
                            }
                            retry.after("node-lifecycle", r);
                        }
                        std::thread::sleep(retry.pause().max(period));
                    }
                })
                .expect("spawn node lifecycle"),
        );
    }
    if cfg.scheduler {
        let lead = gate("skiff-scheduler", &mut handles);
        handles.push(scheduling::run(store.clone(), lead));
    }
    handles
}

/// Keys are reconciled on the events that concern them; every key again this often,
/// as a safety net.
const RESYNC: Duration = Duration::from_secs(30);

/// Back-off after a failed pass: the store could not answer, or a write failed. The
/// pass is repeated (level-triggered: it reads everything again), 100 ms doubling to 5 s.
#[derive(Default)]
struct Retry {
    pause: Duration,
}

impl Retry {
    fn after<T>(&mut self, name: &str, r: Result<T, StoreError>) {
        match r {
            Ok(_) => self.pause = Duration::ZERO,
            Err(e) => {
                self.pause =
                    (self.pause * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                tracing::warn!(controller = name, error = %e, retry_in = ?self.pause, "reconcile failed");
            }
        }
    }

    fn pause(&self) -> Duration {
        self.pause
    }
}
