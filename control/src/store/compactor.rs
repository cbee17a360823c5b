//! Periodic compaction, as kube-apiserver does it for etcd: every interval, history up to
//! the revision seen at the previous tick is dropped, so watchers always have at least
//! one interval of history to resume from (older resourceVersions get 410 Gone), and the
//! embedded store's WAL stays bounded (compaction writes a snapshot).

use super::Store;
use std::time::Duration;

pub fn start(store: Store, interval: Duration) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("compactor".into())
        .spawn(move || {
            let mut last = store.revision();
            loop {
                std::thread::sleep(interval);
                let now = store.revision();
                if last > 0 {
                    // Another API server on the same etcd may have compacted already.
                    let _ = store.compact(last);
                }
                last = now;
            }
        })
        .expect("spawn compactor")
}
