//! Back-off, as the kubelet does it. Crash loops: the first restart is immediate, then
//! 10 s, doubling up to 5 minutes; a container that ran 10 minutes starts over. Failed
//! image pulls and container creates ([`Retry`]): the next try waits 10 s, doubling up to
//! 5 minutes, until one succeeds.

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

    /// Forget a pod (it was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.delays.retain(|(u, _), _| u != uid);
    }
}

/// Back-off for operations that fail before a container runs (image pull, create).
#[derive(Default)]
pub struct Retry {
    /// key → (no try before this, the delay that set it, the back-off was announced).
    next: HashMap<(String, String), (std::time::Instant, Duration, bool)>,
}

impl Retry {
    /// Ok when a try may go ahead now; Err(left, first) while backing off, `first`
    /// true the first time this window is asked about (to announce it once).
    pub fn check(
        &mut self,
        key: &(String, String),
        now: std::time::Instant,
    ) -> Result<(), (Duration, bool)> {
        match self.next.get_mut(key) {
            Some((at, _, announced)) if now < *at => {
                let first = !*announced;
                *announced = true;
                Err((*at - now, first))
            }
            _ => Ok(()),
        }
    }

    /// A try failed at `now`: the next waits 10 s, then twice the last wait, up to 5 min.
    pub fn failed(&mut self, key: (String, String), now: std::time::Instant) -> Duration {
        let delay = match self.next.get(&key) {
            Some((_, d, _)) => (*d * 2).min(MAX),
            None => INITIAL,
        };
        self.next.insert(key, (now + delay, delay, false));
        delay
    }

    pub fn succeeded(&mut self, key: &(String, String)) {
        self.next.remove(key);
    }

    /// Forget a pod (it was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.next.retain(|(u, _), _| u != uid);
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

    #[test]
    fn failed_tries_wait_10s_doubling_to_5_minutes() {
        let mut r = Retry::default();
        let t0 = std::time::Instant::now();
        let s = Duration::from_secs;
        let key = k();
        assert_eq!(r.check(&key, t0), Ok(()));
        assert_eq!(r.failed(key.clone(), t0), s(10));
        assert_eq!(r.check(&key, t0 + s(4)), Err((s(6), true)));
        assert_eq!(
            r.check(&key, t0 + s(5)),
            Err((s(5), false)),
            "announced once"
        );
        assert_eq!(r.check(&key, t0 + s(10)), Ok(()));
        assert_eq!(r.failed(key.clone(), t0 + s(10)), s(20));
        let mut at = t0 + s(30);
        for _ in 0..10 {
            r.failed(key.clone(), at);
            at += s(400);
        }
        assert_eq!(r.failed(key.clone(), at), s(300), "capped");
        r.succeeded(&key);
        assert_eq!(r.check(&key, at), Ok(()));
        assert_eq!(r.failed(key.clone(), at), s(10), "starts over");
        r.forget("u");
        assert_eq!(r.check(&key, at), Ok(()));
    }
}
