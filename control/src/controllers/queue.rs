//! A work queue of object keys, as client-go's workqueue: a key waiting is there once
//! (events for it meanwhile add nothing); a key being reconciled is not handed out
//! again until it is done, and an event for it during that time brings it back after;
//! a key whose reconcile failed comes back after a delay that doubles per failure.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    /// Added while active: queued again when done.
    dirty: HashSet<String>,
    /// (when, key) → added then.
    later: BTreeMap<(Instant, String), ()>,
    failures: HashMap<String, u32>,
}

#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    ready: Condvar,
}

/// The first retry's delay; it doubles per failure up to [`MAX_DELAY`].
const BASE_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

impl WorkQueue {
    pub fn add(&self, key: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.active.contains(key) {
            s.dirty.insert(key.to_string());
        } else if s.queued.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
            self.ready.notify_one();
        }
    }

    pub fn add_after(&self, key: &str, after: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.later
            .insert((Instant::now() + after, key.to_string()), ());
        self.ready.notify_one();
    }

    /// After a failed reconcile: back after 100 ms, doubling per failure to 5 s.
    pub fn retry(&self, key: &str) -> Duration {
        let n = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let n = s.failures.entry(key.to_string()).or_default();
            *n += 1;
            *n
        };
        let delay = (BASE_DELAY * 2u32.saturating_pow(n - 1)).min(MAX_DELAY);
        self.add_after(key, delay);
        delay
    }

    /// After a reconcile that succeeded: its failures are forgotten.
    pub fn forget(&self, key: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.failures.remove(key);
    }

    /// The next key to reconcile, waiting at most `wait`; it is active until [`done`].
    pub fn get(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            while let Some(((at, _), ())) = s.later.first_key_value() {
                if *at > now {
                    break;
                }
                let ((_, key), ()) = s.later.pop_first().expect("a first entry");
                if s.active.contains(&key) {
                    s.dirty.insert(key);
                } else if s.queued.insert(key.clone()) {
                    s.ready.push_back(key);
                }
            }
            if let Some(key) = s.ready.pop_front() {
                s.queued.remove(&key);
                s.active.insert(key.clone());
                return Some(key);
            }
            let next = s.later.first_key_value().map(|((at, _), ())| *at);
            let until = next.map_or(deadline, |n| n.min(deadline));
            if now >= deadline {
                return None;
            }
            s = self
                .ready
                .wait_timeout(s, until.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The key's reconcile ended: if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.active.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
            self.ready.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.ready.len() + s.later.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deduplicated_held_while_active_and_retried_with_back_off() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.get(Duration::ZERO).as_deref(), Some("a"));
        // Added while active: not handed out twice at once; back once done.
        q.add("a");
        assert_eq!(q.get(Duration::ZERO).as_deref(), Some("b"));
        assert_eq!(q.get(Duration::ZERO), None);
        q.done("a");
        assert_eq!(q.get(Duration::ZERO).as_deref(), Some("a"));
        q.done("b");
        // Failures back off: 100 ms, then 200 ms.
        assert_eq!(q.retry("a"), Duration::from_millis(100));
        q.done("a");
        assert_eq!(q.get(Duration::from_millis(20)), None);
        let t = Instant::now();
        assert_eq!(q.get(Duration::from_secs(1)).as_deref(), Some("a"));
        assert!(
            t.elapsed() >= Duration::from_millis(60),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(q.retry("a"), Duration::from_millis(200));
        q.done("a");
        q.forget("a");
        assert_eq!(q.retry("a"), Duration::from_millis(100));
    }
}
