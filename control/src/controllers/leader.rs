//! Leader election through a coordination.k8s.io Lease (kube-system/<name>), as
//! kube-controller-manager and kube-scheduler do: the holder renews it; when a holder
//! stops renewing for leaseDurationSeconds, another candidate takes it over. Writes go
//! through the API's create and update (validation, managedFields) and are
//! compare-and-swap on the lease's resourceVersion, so two candidates never both win.

use super::*;
use crate::apiserver::table::humantime_parse;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

pub struct Elector {
    store: Store,
    key: String,
    name: String,
    pub identity: String,
    duration: Duration,
    leader: Arc<AtomicBool>,
    /// When we last renewed (or took) the lease.
    renewed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// RFC 3339 with microseconds (a MicroTime, as Lease times are).
fn micro_now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

impl Elector {
    pub fn new(store: Store, name: &str, identity: &str, duration: Duration) -> Elector {
        Elector {
            store,
            key: format!("/registry/coordination.k8s.io/leases/kube-system/{name}"),
            name: name.into(),
            identity: identity.into(),
            duration,
            leader: Arc::new(AtomicBool::new(false)),
            renewed: std::sync::Mutex::new(None),
        }
    }

    /// A flag that says whether we lead, for the loops to check.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.leader.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// One attempt to acquire or renew the lease; returns whether we now lead. A store
    /// that cannot answer does not end a lead at once: the leader keeps it until its
    /// renew deadline (two thirds of the lease, client-go's default ratio), well before
    /// another candidate may take the lease over.
    pub fn tick(&self) -> bool {
        let won = match self.try_acquire() {
            Ok(won) => {
                if won {
                    *self.renewed.lock().unwrap() = Some(std::time::Instant::now());
                }
                won
            }
            Err(e) => {
                let keep = self.is_leader()
                    && self
                        .renewed
                        .lock()
                        .unwrap()
                        .is_some_and(|t| t.elapsed() < self.duration * 2 / 3);
                tracing::warn!(lease = %self.name, identity = %self.identity, leading = keep, error = %e, "lease not renewed");
                keep
            }
        };
        self.leader.store(won, Ordering::SeqCst);
        won
    }

    /// The field manager of the lease writes, as kube's components name themselves.
    fn manager(&self) -> &'static str {
        if self.name.contains("scheduler") {
            "kube-scheduler"
        } else {
            CONTROLLER_MANAGER
        }
    }

    fn try_acquire(&self) -> Result<bool, StoreError> {
        let now = micro_now();
        let secs = self.duration.as_secs().max(1);
        match self.store.get(&self.key)? {
            None => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"namespace": "kube-system", "name": self.name},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": secs,
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
                });
                // None: another candidate created it first.
                Ok(create_as(
                    &self.store,
                    "coordination.k8s.io",
                    "leases",
                    lease,
                    self.manager(),
                )?
                .is_some())
            }
            Some(kv) => {
                let mut lease = decode(&kv);
                let holder = lease["spec"]["holderIdentity"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let renewed = lease["spec"]["renewTime"]
                    .as_str()
                    .and_then(|s| humantime_parse(s).ok());
                let held_for = lease["spec"]["leaseDurationSeconds"]
                    .as_u64()
                    .unwrap_or(secs);
                let expired = renewed.is_none_or(|t| {
                    SystemTime::now().duration_since(t).unwrap_or_default()
                        > Duration::from_secs(held_for)
                });
                if holder == self.identity {
                    lease["spec"]["renewTime"] = json!(now);
                } else if holder.is_empty() || expired {
                    let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
                    lease["spec"] = json!({"holderIdentity": self.identity, "leaseDurationSeconds": secs,
                        "acquireTime": now, "renewTime": now, "leaseTransitions": transitions + 1});
                } else {
                    return Ok(false);
                }
                // The read's resourceVersion guards the write; None: someone else wrote.
                Ok(update_as(&self.store, &self.key, &lease, self.manager())?.is_some())
            }
        }
    }

    /// Keep trying and renewing in the background (every third of the lease duration).
    pub fn run(self) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name(format!("leader-{}", self.name))
            .spawn(move || loop {
                let was = self.is_leader();
                let now = self.tick();
                if now != was {
                    tracing::info!(
                        lease = %self.name,
                        identity = %self.identity,
                        "{} the lease",
                        if now { "acquired" } else { "lost" }
                    );
                }
                std::thread::sleep((self.duration / 3).max(Duration::from_millis(200)));
            })
            .expect("spawn leader election")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_and_takeover_after_expiry() {
        let dir = std::env::temp_dir().join(format!("skiff-leader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        crate::apiserver::objects::ensure_default_namespaces(&store).unwrap();
        let d = Duration::from_secs(1);
        let a = Elector::new(store.clone(), "skiff-scheduler", "a", d);
        let b = Elector::new(store.clone(), "skiff-scheduler", "b", d);
        assert!(a.tick());
        assert!(!b.tick(), "held by a");
        assert!(a.tick(), "a renews");
        assert!(!b.tick());
        // a stops renewing: after the lease duration b takes over, and a has lost it.
        std::thread::sleep(Duration::from_millis(1300));
        assert!(b.tick());
        assert!(!a.tick());
        let lease = decode(
            &store
                .get("/registry/coordination.k8s.io/leases/kube-system/skiff-scheduler")
                .unwrap()
                .unwrap(),
        );
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        // Written through the API: its field manager is recorded.
        assert_eq!(
            lease["metadata"]["managedFields"][0]["manager"],
            "kube-scheduler"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
