//! Endpoints and EndpointSlices from Services and their pods: for a Service with a
//! selector, the pods that match it and have an IP, Ready ones as addresses and the rest
//! as not-ready, with each service port resolved to the pod's port (named target ports
//! looked up in the pod's containers). What kube-proxy programs its rules from.
//!
//! A controller of keys, as kube's: one list and a watch keep a cache of Services,
//! pods (their read fields), Endpoints and slices; each event queues the Services it
//! concerns (a pod: the Services of its namespace whose selector takes its old or new
//! labels); a Service is reconciled alone from the cache, once at a time, retried with
//! back-off when a write fails, and everything is queued again every 30 s. What it
//! writes goes into the cache at once (a slice it just created is not created twice
//! before the watch brings it back).

use super::queue::WorkQueue;
use super::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Marks the Endpoints this controller manages (user-made ones for selector-less
/// Services are left alone); kube's controller sets the same annotation.
const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const SLICE_OWNER: &str = "endpointslice.kubernetes.io/managed-by";
const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    sel.as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
}

/// The pod's port for a service port's targetPort (a number, or a container port name).
fn target_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match &svc_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_i64()),
        },
        _ => svc_port["port"].as_i64(),
    }
}

const SERVICES: &str = "/registry/core/services/";
const PODS: &str = "/registry/core/pods/";
const ENDPOINTS: &str = "/registry/core/endpoints/";
const SLICES: &str = "/registry/discovery.k8s.io/endpointslices/";

/// What the controller knows of the cluster, by `namespace/name` (slices by store key).
#[derive(Default)]
struct Cache {
    services: HashMap<String, Value>,
    /// namespace → name → the pod's read fields.
    pods: HashMap<String, HashMap<String, Value>>,
    endpoints: HashMap<String, Value>,
    slices: HashMap<String, Value>,
}

fn rv(o: &Value) -> i64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `namespace/name` of a store key `/registry/GROUP/PLURAL/NAMESPACE/NAME`.
fn ns_name(key: &str) -> Option<(&str, &str)> {
    let mut it = key.rsplitn(3, '/');
    let name = it.next()?;
    let ns = it.next()?;
    Some((ns, name))
}

impl Cache {
    fn load(store: &Store) -> Result<(Cache, i64), StoreError> {
        let rev = store.revision()?;
        let mut c = Cache::default();
        for kv in store.list(SERVICES)?.0 {
            c.apply(&kv.key, Some(&kv));
        }
        for prefix in [PODS, ENDPOINTS, SLICES] {
            for kv in store.list(prefix)?.0 {
                c.apply(&kv.key, Some(&kv));
            }
        }
        Ok((c, rev))
    }

    /// The object at `key` is now `kv` (None: deleted); an older version than the one
    /// held (one this controller wrote and put here itself) is ignored.
    fn apply(&mut self, key: &str, kv: Option<&crate::store::KeyValue>) {
        let Some((ns, name)) = ns_name(key) else {
            return;
        };
        let id = format!("{ns}/{name}");
        let newer = |held: Option<&Value>, kv: &crate::store::KeyValue| {
            held.is_none_or(|h| rv(h) <= kv.mod_revision)
        };
        if key.starts_with(PODS) {
            let pods = self.pods.entry(ns.to_string()).or_default();
            match kv {
                Some(kv) => {
                    pods.insert(name.to_string(), view::masked(kv, view::pod_fields()));
                }
                None => {
                    pods.remove(name);
                }
            }
            return;
        }
        let map = if key.starts_with(SERVICES) {
            &mut self.services
        } else if key.starts_with(ENDPOINTS) {
            &mut self.endpoints
        } else if key.starts_with(SLICES) {
            return match kv {
                Some(kv) if newer(self.slices.get(key), kv) => {
                    self.slices.insert(key.to_string(), decode(kv));
                }
                Some(_) => {}
                None => {
                    self.slices.remove(key);
                }
            };
        } else {
            return;
        };
        match kv {
            Some(kv) if newer(map.get(&id), kv) => {
                map.insert(id, decode(kv));
            }
            Some(_) => {}
            None => {
                map.remove(&id);
            }
        }
    }

    /// The Services an event for `key` concerns (`prev`: the object before it).
    fn concerned(&self, key: &str, now: Option<&Value>, prev: Option<&Value>) -> Vec<String> {
        let Some((ns, name)) = ns_name(key) else {
            return Vec::new();
        };
        if key.starts_with(SERVICES) || key.starts_with(ENDPOINTS) {
            return vec![format!("{ns}/{name}")];
        }
        if key.starts_with(SLICES) {
            return now
                .into_iter()
                .chain(prev)
                .filter_map(|s| s["metadata"]["labels"]["kubernetes.io/service-name"].as_str())
                .map(|svc| format!("{ns}/{svc}"))
                .collect();
        }
        // A pod: the Services of its namespace selecting it, before or after.
        self.services
            .iter()
            .filter(|(id, _)| id.split('/').next() == Some(ns))
            .filter(|(_, s)| {
                now.into_iter()
                    .chain(prev)
                    .any(|p| selector_matches(&s["spec"]["selector"], &p["metadata"]["labels"]))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Run the controller while `lead` says so.
pub fn run(store: Store, lead: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("endpoints".into())
        .spawn(move || {
            let mut pause = Duration::ZERO;
            loop {
                std::thread::sleep(pause);
                if !lead.load(Ordering::SeqCst) {
                    pause = Duration::from_secs(1);
                    continue;
                }
                // (Re)start from a list; a watch from its revision keeps the cache.
                let started = Cache::load(&store).and_then(|(c, rev)| {
                    Ok((c, store.watch_many(&[SERVICES, PODS, ENDPOINTS, SLICES], rev)?))
                });
                let (cache, w) = match started {
                    Ok(x) => x,
                    Err(e) => {
                        pause = (pause * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                        tracing::warn!(controller = "endpoints", error = %e, retry_in = ?pause, "cannot read the cluster");
                        continue;
                    }
                };
                pause = Duration::ZERO;
                let cache = Mutex::new(cache);
                if let Err(e) = serve(&store, &cache, &w, &lead) {
                    tracing::warn!(controller = "endpoints", error = %e, "watch ended; listing again");
                }
            }
        })
        .expect("spawn endpoints controller")
}

/// Events into the cache and the queue, keys out of it, until the watch fails or the
/// lead is lost.
fn serve(
    store: &Store,
    cache: &Mutex<Cache>,
    w: &crate::store::Watch,
    lead: &AtomicBool,
) -> Result<(), StoreError> {
    let q = WorkQueue::default();
    let all = |q: &WorkQueue| {
        let c = cache.lock().unwrap_or_else(|p| p.into_inner());
        for id in c.services.keys().chain(c.endpoints.keys()) {
            q.add(id);
        }
    };
    all(&q);
    let mut resync = std::time::Instant::now();
    loop {
        if !lead.load(Ordering::SeqCst) {
            return Ok(());
        }
        if resync.elapsed() >= super::RESYNC {
            resync = std::time::Instant::now();
            all(&q);
        }
        // Events first, so a key is reconciled from everything seen so far.
        let wait = if q.len() > 0 {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        };
        let first = w.recv_timeout(wait)?;
        let events = first.into_iter().chain(w.drain()?);
        {
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            for ev in events {
                let key = ev.kv.key.clone();
                let prev = ev
                    .prev
                    .as_ref()
                    .map(|p| view::masked(p, view::pod_fields()));
                let now = match ev.kind {
                    crate::store::EventKind::Put => Some(view::masked(&ev.kv, view::pod_fields())),
                    crate::store::EventKind::Delete => None,
                };
                let gone = ev.kind == crate::store::EventKind::Delete;
                // Which Services an event concerns does not depend on the event's own
                // object in the cache (a pod's: the Services' selectors against its old
                // and new labels), so it is asked once.
                let keys = c.concerned(&key, now.as_ref(), prev.as_ref());
                c.apply(&key, (!gone).then_some(&ev.kv));
                for k in keys {
                    q.add(&k);
                }
            }
        }
        while let Some(id) = q.get(Duration::ZERO) {
            match sync(store, cache, &id) {
                Ok(()) => q.forget(&id),
                Err(e) => {
                    let after = q.retry(&id);
                    tracing::warn!(controller = "endpoints", service = %id, error = %e, retry_in = ?after, "reconcile failed");
                }
            }
            q.done(&id);
        }
    }
}

/// Bring one Service's Endpoints and EndpointSlice to what its pods say (or remove the
/// Endpoints this controller made for a Service that is gone).
fn sync(store: &Store, cache: &Mutex<Cache>, id: &str) -> Result<(), StoreError> {
    let start = std::time::SystemTime::now();
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    let (svc, matching, existing, mine) = {
        let c = cache.lock().unwrap_or_else(|p| p.into_inner());
        let existing = c.endpoints.get(id).cloned();
        let Some(svc) = c.services.get(id).cloned() else {
            drop(c);
            // Endpoints of a Service that is gone (slices go with their owner, by GC).
            if let Some(e) = existing.filter(|e| e["metadata"]["annotations"][TRIGGER].is_string())
            {
                super::delete_unchanged(store, &key_of(&e, "core", "endpoints"), &e)?;
            }
            return Ok(());
        };
        let sel = &svc["spec"]["selector"];
        let matching: Vec<Value> = c
            .pods
            .get(ns)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["podIP"].is_string()
                    && selector_matches(sel, &p["metadata"]["labels"])
            })
            .cloned()
            .collect();
        let mine = c
            .slices
            .values()
            .find(|s| {
                s["metadata"]["namespace"] == ns
                    && s["metadata"]["labels"]["kubernetes.io/service-name"] == name
                    && s["metadata"]["labels"][SLICE_OWNER] == SLICE_MANAGER
            })
            .cloned();
        (svc, matching, existing, mine)
    };
    if svc["spec"]["selector"]
        .as_object()
        .is_none_or(|m| m.is_empty())
    {
        return Ok(()); // endpoints of selector-less services are the user's
    }
    // Pods in a stable order (the cache's is a hash's).
    let mut matching = matching;
    matching.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    let matching: Vec<&Value> = matching.iter().collect();
    let (endpoints, slice) = write(
        store,
        &svc,
        ns,
        name,
        &matching,
        existing.as_ref(),
        mine.as_ref(),
        start,
    )?;
    // What was written is what the cache holds now (the watch brings the same later).
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = endpoints {
        c.endpoints.insert(id.to_string(), e);
    }
    if let Some(s) = slice {
        c.slices
            .insert(key_of(&s, "discovery.k8s.io", "endpointslices"), s);
    }
    Ok(())
}

/// The writes for one Service: its Endpoints and its slice, each if it differs. What
/// was written, for the cache.
#[allow(clippy::too_many_arguments)]
fn write(
    store: &Store,
    svc: &Value,
    ns: &str,
    name: &str,
    matching: &[&Value],
    existing: Option<&Value>,
    mine: Option<&Value>,
    start: std::time::SystemTime,
) -> Result<(Option<Value>, Option<Value>), StoreError> {
    let mut written = (None, None);
    {
        let svc_ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        // Endpoints: pods grouped by their resolved ports (one subset per port set).
        let mut subsets: Vec<Value> = Vec::new();
        for p in matching {
            let ports: Vec<Value> = svc_ports
                .iter()
                .filter_map(|sp| {
                    let port = target_port(sp, p)?;
                    let mut e =
                        json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(n) = sp["name"].as_str().filter(|n| !n.is_empty()) {
                        e["name"] = json!(n);
                    }
                    Some(e)
                })
                .collect();
            let addr = json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}});
            let field = if pod_ready(p) {
                "addresses"
            } else {
                "notReadyAddresses"
            };
            match subsets.iter_mut().find(|s| s["ports"] == json!(ports)) {
                Some(s) => match s[field].as_array_mut() {
                    Some(a) => a.push(addr),
                    None => s[field] = json!([addr]),
                },
                None => {
                    let mut s = json!({"ports": ports});
                    s[field] = json!([addr]);
                    subsets.push(s);
                }
            }
        }
        for s in subsets.iter_mut() {
            for f in ["addresses", "notReadyAddresses"] {
                if let Some(a) = s[f].as_array_mut() {
                    a.sort_by(|x, y| x["ip"].as_str().cmp(&y["ip"].as_str()));
                }
            }
        }
        let mut labels = svc["metadata"]["labels"].clone();
        if labels.is_null() {
            labels = json!({});
        }
        match existing {
            Some(e) if e["subsets"] == json!(subsets) => {}
            Some(e) => {
                let mut next = e.clone();
                next["subsets"] = json!(subsets);
                next["metadata"]["annotations"][TRIGGER] = json!(now_rfc3339());
                written.0 = update(store, &key_of(e, "core", "endpoints"), &next)?;
            }
            None => {
                let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"namespace": ns, "name": name, "labels": labels, "annotations": {TRIGGER: now_rfc3339()}},
                    "subsets": subsets});
                written.0 = create(store, "core", "endpoints", ep)?;
            }
        }

        // One EndpointSlice per service (kube splits at 100 endpoints; one is enough here).
        let slice_ports: Vec<Value> = svc_ports
            .iter()
            .map(|sp| {
                let port = matching
                    .first()
                    .and_then(|p| target_port(sp, p))
                    .or_else(|| sp["targetPort"].as_i64())
                    .or_else(|| sp["port"].as_i64());
                json!({"name": sp["name"].as_str().unwrap_or(""), "port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")})
            })
            .collect();
        let mut eps: Vec<Value> = matching
            .iter()
            .map(|p| {
                let ready = pod_ready(p);
                json!({"addresses": [p["status"]["podIP"]], "conditions": {"ready": ready, "serving": ready, "terminating": false},
                       "nodeName": p["spec"]["nodeName"],
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
            })
            .collect();
        eps.sort_by(|x, y| x["addresses"][0].as_str().cmp(&y["addresses"][0].as_str()));
        match mine {
            Some(s) if s["endpoints"] == json!(eps) && s["ports"] == json!(slice_ports) => {}
            Some(s) => {
                let mut next = s.clone();
                next["endpoints"] = json!(eps);
                next["ports"] = json!(slice_ports);
                annotate_step(&mut next, start, &eps);
                written.1 = update(
                    store,
                    &key_of(s, "discovery.k8s.io", "endpointslices"),
                    &next,
                )?;
            }
            None => {
                let mut l = labels.clone();
                l["kubernetes.io/service-name"] = json!(name);
                l[SLICE_OWNER] = json!(SLICE_MANAGER);
                let mut slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"namespace": ns, "generateName": format!("{name}-"), "labels": l,
                                 "ownerReferences": [owner_ref(svc, "v1", "Service")]},
                    "addressType": "IPv4", "endpoints": eps, "ports": slice_ports});
                annotate_step(&mut slice, start, &eps);
                written.1 = create(store, "discovery.k8s.io", "endpointslices", slice)?;
            }
        }
    }
    Ok(written)
}

/// The write's step for `kubectl skiff trace` (from the pass that saw the change to the
/// write) and the change-trigger time kube-proxy measures network programming from.
fn annotate_step(slice: &mut Value, start: std::time::SystemTime, eps: &[Value]) {
    let ready = eps
        .iter()
        .filter(|e| e["conditions"]["ready"] == true)
        .count();
    let step = skiff_apimachinery::trace::Step::since(start)
        .with_detail(format!("{} endpoints, {ready} ready", eps.len()));
    let a = &mut slice["metadata"]["annotations"];
    if !a.is_object() {
        *a = json!({});
    }
    for (k, v) in step.annotations() {
        a[k] = json!(v);
    }
    a[TRIGGER] = json!(skiff_apimachinery::trace::micro_time(start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_queues_exactly_the_services_it_concerns() {
        let mut c = Cache::default();
        for (id, sel) in [
            ("a/web", json!({"app": "web"})),
            ("a/api", json!({"app": "api"})),
            ("b/web", json!({"app": "web"})),
        ] {
            c.services
                .insert(id.into(), json!({"spec": {"selector": sel}}));
        }
        let pod = |app: &str| json!({"metadata": {"labels": {"app": app}}});
        let mut got = c.concerned(
            "/registry/core/pods/a/p",
            Some(&pod("api")),
            Some(&pod("web")),
        );
        got.sort();
        assert_eq!(
            got,
            ["a/api", "a/web"],
            "the old and the new selecting Service"
        );
        assert!(c
            .concerned("/registry/core/pods/a/p", Some(&pod("db")), None)
            .is_empty());
        let slice = json!({"metadata": {"labels": {"kubernetes.io/service-name": "web"}}});
        assert_eq!(
            c.concerned(
                "/registry/discovery.k8s.io/endpointslices/b/web-x1",
                Some(&slice),
                None
            ),
            ["b/web"]
        );
        assert_eq!(
            c.concerned("/registry/core/endpoints/a/gone", None, None),
            ["a/gone"]
        );
    }

    #[test]
    fn named_and_numeric_target_ports() {
        let pod =
            json!({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": "http"}), &pod),
            Some(8080)
        );
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": 9090}), &pod),
            Some(9090)
        );
        assert_eq!(target_port(&json!({"port": 80}), &pod), Some(80));
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": "nope"}), &pod),
            None
        );
    }
}
