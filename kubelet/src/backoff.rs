//! Crash-loop back-off, as the kubelet does it: the first restart is immediate, then
//! 10 s, doubling up to 5 minutes; a container that ran 10 minutes starts over.

use std::collections::HashMap;
use std::time::Duration;

const INITIAL: Duration = Duration::from_secs(10);
const MAX: Duration = Duration::from_secs(300);
const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Backoff {
    /// Per (pod uid, container name): the delay to wait after the next exit.
    delays: HashMap<(String, String), Duration>,
}

/// What to do with an exited container.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    RestartNow,
    /// Still backing off; this much longer.
    Wait(Duration),
}

impl Backoff {
    /// `ran` is how long the dead container ran, `since_exit` how long ago it exited.
    pub fn check(&mut self, key: (String, String), ran: Duration, since_exit: Duration) -> Verdict {
        if ran >= RESET_AFTER {
            self.delays.remove(&key);
        }
        match self.delays.get(&key).copied() {
            None => {
                self.delays.insert(key, INITIAL);
                Verdict::RestartNow
            }
            Some(d) if since_exit >= d => {
                self.delays.insert(key, (d * 2).min(MAX));
                Verdict::RestartNow
            }
            Some(d) => Verdict::Wait(d - since_exit),
        }
    }

    /// Forget one entry (its pull or run succeeded).
    pub fn forget_key(&mut self, key: &(String, String)) {
        self.delays.remove(key);
    }

    /// Forget a pod (it was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.delays.retain(|(u, _), _| u != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> (String, String) {
        ("u".into(), "c".into())
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let s = Duration::from_secs;
        assert_eq!(b.check(k(), s(1), s(0)), Verdict::RestartNow);
        assert_eq!(b.check(k(), s(1), s(4)), Verdict::Wait(s(6)));
        assert_eq!(b.check(k(), s(1), s(10)), Verdict::RestartNow);
        assert_eq!(b.check(k(), s(1), s(19)), Verdict::Wait(s(1)));
        assert_eq!(b.check(k(), s(1), s(20)), Verdict::RestartNow);
        for _ in 0..10 {
            b.check(k(), s(1), s(1000));
        }
        assert_eq!(b.check(k(), s(1), s(299)), Verdict::Wait(s(1)));
        // A long run resets the delay.
        assert_eq!(b.check(k(), s(700), s(0)), Verdict::RestartNow);
        b.forget("u");
        assert_eq!(b.check(k(), s(1), s(0)), Verdict::RestartNow);
    }
}
