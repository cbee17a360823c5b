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
    /// Whether an exited container may restart now. `ran` is how long it ran,
    /// `since_exit` how long ago it exited. Asking changes nothing: the planner asks,
    /// and [`Backoff::restarted`] records the restart once it is carried out.
    pub fn verdict(&self, key: &(String, String), ran: Duration, since_exit: Duration) -> Verdict {
        match self.delays.get(key).filter(|_| ran < RESET_AFTER) {
            Some(d) if since_exit < *d => Verdict::Wait(*d - since_exit),
            _ => Verdict::RestartNow,
        }
    }

    /// A restart happened: the next one waits 10 s, then twice the last wait (up to
    /// 5 minutes); a run of 10 minutes or more starts the count over.
    pub fn restarted(&mut self, key: (String, String), ran: Duration) {
        let next = match self.delays.get(&key) {
            Some(d) if ran < RESET_AFTER => (*d * 2).min(MAX),
            _ => INITIAL,
        };
        self.delays.insert(key, next);
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
        let mut check = |ran, since| {
            let v = b.verdict(&k(), ran, since);
            if v == Verdict::RestartNow {
                b.restarted(k(), ran);
            }
            v
        };
        assert_eq!(check(s(1), s(0)), Verdict::RestartNow);
        assert_eq!(check(s(1), s(4)), Verdict::Wait(s(6)));
        assert_eq!(check(s(1), s(10)), Verdict::RestartNow);
        assert_eq!(check(s(1), s(19)), Verdict::Wait(s(1)));
        assert_eq!(check(s(1), s(20)), Verdict::RestartNow);
        for _ in 0..10 {
            check(s(1), s(1000));
        }
        assert_eq!(check(s(1), s(299)), Verdict::Wait(s(1)));
        // A long run resets the delay.
        assert_eq!(check(s(700), s(0)), Verdict::RestartNow);
        assert_eq!(check(s(1), s(9)), Verdict::Wait(s(1)), "back to 10 s");
        b.forget("u");
        assert_eq!(b.verdict(&k(), s(1), s(0)), Verdict::RestartNow);
    }

    #[test]
    fn asking_does_not_count_as_a_restart() {
        let mut b = Backoff::default();
        let s = Duration::from_secs;
        for _ in 0..3 {
            assert_eq!(b.verdict(&k(), s(1), s(0)), Verdict::RestartNow);
        }
        b.restarted(k(), s(1));
        assert_eq!(b.verdict(&k(), s(1), s(0)), Verdict::Wait(s(10)));
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
