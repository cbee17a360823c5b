//! Container events (GetContainerEvents: `crictl events`, the kubelet's evented PLEG):
//! created, started, stopped and deleted, for containers and for pod sandboxes (a
//! sandbox's events carry its id, as containerd sends them). Each event carries the
//! pod's status and its containers' statuses, as the API asks. A stop is noticed from
//! the monitor's exit file, so containers that end on their own are reported too.

use super::shim::now_ns;
use super::{v1, Inner};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::broadcast;

pub use v1::ContainerEventType as Kind;

/// How often exit files are looked for.
const EXIT_POLL: Duration = Duration::from_millis(200);

pub struct Events {
    tx: broadcast::Sender<v1::ContainerEventResponse>,
    /// Containers whose stop has been reported (each is reported once).
    stopped: Mutex<HashSet<String>>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(1024).0,
            stopped: Mutex::new(HashSet::new()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<v1::ContainerEventResponse> {
        self.tx.subscribe()
    }

    fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// True the first time a container's stop is claimed for reporting.
    fn claim_stop(&self, id: &str) -> bool {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
    }

    fn forget(&self, id: &str) {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Inner {
    /// Report `kind` for `id` (a container, or a pod sandbox when `id == pod_id`).
    pub fn emit(&self, id: &str, pod_id: &str, kind: Kind) {
        match kind {
            Kind::ContainerStoppedEvent if !self.events.claim_stop(id) => return,
            Kind::ContainerDeletedEvent => self.events.forget(id),
            _ => {}
        }
        if !self.events.listening() {
            return;
        }
        let pod_sandbox_status = self.pod_status(pod_id, false).ok().and_then(|r| r.status);
        let ids: Vec<String> = self
            .records()
            .containers
            .values()
            .filter(|c| c.pod_id == pod_id)
            .map(|c| c.id.clone())
            .collect();
        let containers_statuses = ids
            .iter()
            .filter_map(|c| self.container_status(c, false).ok()?.status)
            .collect();
        let _ = self.events.tx.send(v1::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// Containers that have exited already are not news: mark them reported.
    pub fn seed_stopped(&self) {
        let done: Vec<String> = self
            .records()
            .containers
            .values()
            .filter(|c| c.exit_file().exists())
            .map(|c| c.id.clone())
            .collect();
        for id in done {
            self.events.claim_stop(&id);
        }
    }

    /// Report containers that have exited since the last look. Exits are claimed even
    /// while nobody listens, so a later listener is not told old news.
    pub fn watch_exits(&self) {
        loop {
            std::thread::sleep(EXIT_POLL);
            let exited: Vec<(String, String)> = self
                .records()
                .containers
                .values()
                .filter(|c| c.exit_file().exists())
                .map(|c| (c.id.clone(), c.pod_id.clone()))
                .collect();
            for (id, pod) in exited {
                self.emit(&id, &pod, Kind::ContainerStoppedEvent);
            }
        }
    }
}
