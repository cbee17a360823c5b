//! When to sync: kube-proxy's bounded-frequency runner. Changes that arrive together
//! are taken together (at most one sync per `min` interval), a change that arrives
//! during a sync is taken by the next one, and a resync runs at least every `period`
//! even when nothing changes. Syncs never overlap: the caller awaits each one.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only what changed since the last sync.
    Sync,
    /// The periodic one: also checks the kernel for changes made by others.
    Resync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Run(Kind),
    Wait(Duration),
}

#[derive(Debug, Clone)]
pub struct Runner {
    min: Duration,
    period: Duration,
    last_run: Option<Instant>,
    last_resync: Instant,
}

impl Runner {
    pub fn new(min: Duration, period: Duration, now: Instant) -> Runner {
        Runner {
            min,
            period,
            last_run: None,
            last_resync: now,
        }
    }

    /// What to do at `now`, with or without changes waiting.
    pub fn next(&self, now: Instant, pending: bool) -> Next {
        let since_run = self.last_run.map(|t| now.saturating_duration_since(t));
        let resync_due = now.saturating_duration_since(self.last_resync) >= self.period;
        if !(pending || resync_due) {
            let left = self
                .period
                .saturating_sub(now.saturating_duration_since(self.last_resync));
            return Next::Wait(left);
        }
        match since_run {
            Some(s) if s < self.min => Next::Wait(self.min - s),
            _ if resync_due => Next::Run(Kind::Resync),
            _ => Next::Run(Kind::Sync),
        }
    }

    /// A sync of `kind` that started at `started` has finished.
    pub fn ran(&mut self, kind: Kind, started: Instant) {
        self.last_run = Some(started);
        if kind == Kind::Resync {
            self.last_resync = started;
        }
    }
}

/// Run syncs until `stop` completes: the first at once, then as `changed` is notified
/// and the runner allows. `sync` gets the kind and is awaited before anything else.
pub async fn drive<F, Fut>(
    mut runner: Runner,
    changed: Arc<Notify>,
    stop: impl Future<Output = ()>,
    mut sync: F,
) where
    F: FnMut(Kind) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    let mut pending = true;
    loop {
        match runner.next(Instant::now(), pending) {
            Next::Run(kind) => {
                pending = false;
                let started = Instant::now();
                sync(kind).await;
                runner.ran(kind, started);
            }
            Next::Wait(d) => {
                tokio::select! {
                    _ = changed.notified() => pending = true,
                    _ = tokio::time::sleep(d) => {}
                    _ = &mut stop => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Runner::new(ms(100), ms(1000), t0);
        assert_eq!(r.next(t0, true), Next::Run(Kind::Sync));
        assert_eq!(r.next(t0, false), Next::Wait(ms(1000)));
        r.ran(Kind::Sync, t0);
        // A change right after a sync waits out the minimum interval.
        assert_eq!(r.next(t0 + ms(30), true), Next::Wait(ms(70)));
        assert_eq!(r.next(t0 + ms(100), true), Next::Run(Kind::Sync));
        // Nothing pending: the periodic resync, once due.
        assert_eq!(r.next(t0 + ms(400), false), Next::Wait(ms(600)));
        assert_eq!(r.next(t0 + ms(1000), false), Next::Run(Kind::Resync));
        r.ran(Kind::Resync, t0 + ms(1000));
        assert_eq!(r.next(t0 + ms(1500), false), Next::Wait(ms(500)));
    }

    /// A change made while a long sync runs is taken by the next sync, which starts
    /// no sooner than the minimum interval after the previous one started.
    #[tokio::test]
    async fn change_during_a_sync_is_taken_by_the_next() {
        let ms = Duration::from_millis;
        let desired = Arc::new(Mutex::new(1));
        let seen: Arc<Mutex<Vec<(i32, Instant)>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let (desired, seen, changed) = (desired.clone(), seen.clone(), changed.clone());
            tokio::spawn(drive(
                Runner::new(ms(150), ms(60_000), Instant::now()),
                changed,
                async move {
                    let _ = stop_rx.await;
                },
                move |_| {
                    let (desired, seen) = (desired.clone(), seen.clone());
                    async move {
                        let v = *desired.lock().unwrap();
                        seen.lock().unwrap().push((v, Instant::now()));
                        // A long sync.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                },
            ))
        };
        tokio::time::sleep(ms(100)).await;
        *desired.lock().unwrap() = 2;
        changed.notify_one();
        for _ in 0..100 {
            if seen.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(ms(20)).await;
        }
        let _ = stop_tx.send(());
        task.await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!((seen[0].0, seen[1].0), (1, 2));
        assert!(seen[1].1 - seen[0].1 >= ms(300), "not overlapping");
    }
}
