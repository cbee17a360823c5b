//! Periodic compaction, as kube-apiserver does it for etcd: every interval, history up to
//! the revision seen at the previous tick is dropped, so watchers always have at least
//! one interval of history to resume from (older resourceVersions get 410 Gone), and the
//! embedded store's WAL stays bounded (compaction writes a snapshot).

use super::{Store, StoreError};
use std::time::Duration;

pub fn start(store: Store, interval: Duration) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("compactor".into())
        .spawn(move || {
            // The revision seen at the previous tick (0: none yet, or the store could
            // not say).
            let mut last = store.revision().unwrap_or(0);
            loop {
                std::thread::sleep(interval);
                let now = match store.revision() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "compaction skipped: the store cannot say its revision");
                        0
                    }
                };
                if last > 0 {
                    match store.compact(last) {
                        Ok(()) => tracing::debug!(revision = last, "compacted"),
                        // Another API server on the same etcd may have compacted already.
                        Err(StoreError::Compacted { .. }) => {}
                        Err(e) => tracing::warn!(revision = last, error = %e, "compaction failed"),
                    }
                }
                last = now;
            }
        })
        .expect("spawn compactor")
}
