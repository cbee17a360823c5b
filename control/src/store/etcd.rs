//! The store on etcd v3, for several API servers (and controller managers) on one
//! cluster state. Revisions, create/mod revisions and versions are etcd's own; a
//! precondition is a transaction compare; a watch is an etcd watch from a revision.
//!
//! A cluster of members, not one server: each member has its own client, requests go to
//! the current member, and one that fails (member down, no leader, no answer in time)
//! moves on to the next member until a deadline. Reads and compare-and-swap transactions
//! are safe to repeat; a transaction repeated after an answer was lost checks whether its
//! first attempt landed. Watches resume on another member from their last revision.
//! Every failure reaches the caller as an error, never as an absent key or empty list.
//!
//! The callers are synchronous (controller threads, handlers), so each call runs on this
//! backend's own tokio runtime and the caller waits on a channel: that works from any
//! thread, async ones included.

use super::{Event, EventKind, KeyValue, Page, Precondition, StoreError, Watch};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One attempt on one member.
const ATTEMPT: Duration = Duration::from_secs(5);
/// A request, over all its attempts (kube-apiserver's default request timeout is 60 s;
/// a store that cannot answer in 15 s is reported rather than waited on).
const DEADLINE: Duration = Duration::from_secs(15);
/// How often a watch no member takes back says so again.
const WATCH_NAG: Duration = Duration::from_secs(30);

/// Client certificates for etcd (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Etcd {
    rt: Arc<tokio::runtime::Runtime>,
    members: Arc<Members>,
}

struct Members {
    clients: Vec<(String, Client)>,
    /// The member requests go to; moved on when it fails.
    current: AtomicUsize,
}

/// What to do about a failed attempt.
enum Failure {
    /// Try another member (the member or its quorum could not answer).
    Retry(StoreError),
    /// The answer stands (a bad request, a compacted revision).
    Final(StoreError),
}

fn classify(url: &str, e: etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = format!("etcd {url}: {}", s.message());
            // gRPC status codes (etcd-client has its own tonic version).
            const CANCELLED: i32 = 1;
            const UNKNOWN: i32 = 2;
            const DEADLINE_EXCEEDED: i32 = 4;
            const RESOURCE_EXHAUSTED: i32 = 8;
            const ABORTED: i32 = 10;
            const OUT_OF_RANGE: i32 = 11;
            const UNAVAILABLE: i32 = 14;
            match i32::from(s.code()) {
                // etcd's "request timed out", "no leader", "leader changed", "too many
                // requests" are all Unavailable; the rest are a dead connection.
                UNAVAILABLE | CANCELLED | ABORTED | RESOURCE_EXHAUSTED => {
                    Failure::Retry(StoreError::Unavailable(m))
                }
                DEADLINE_EXCEEDED => Failure::Retry(StoreError::Timeout(m)),
                UNKNOWN if s.message().contains("transport") => {
                    Failure::Retry(StoreError::Unavailable(m))
                }
                OUT_OF_RANGE if s.message().contains("compacted") => {
                    Failure::Final(StoreError::Compacted {
                        requested: 0,
                        compacted: 0,
                    })
                }
                _ => Failure::Final(StoreError::Io(m)),
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::Retry(StoreError::Unavailable(format!("etcd {url}: {e}")))
        }
        other => Failure::Final(StoreError::Io(format!("etcd {url}: {other}"))),
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().into(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StoreError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| StoreError::Io(format!("read {}: {e}", p.display())))
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        o = o.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => o = o.identity(Identity::from_pem(read(c)?, read(k)?)),
        (None, None) => {}
        _ => {
            return Err(StoreError::Io(
                "--etcd-certfile and --etcd-keyfile go together".into(),
            ))
        }
    }
    Ok(o)
}

impl Members {
    /// Run `op` against members in turn until one answers or the deadline passes.
    /// Returns the answer and how many attempts it took.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<(T, u32), StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_within(DEADLINE, what, op).await
    }

    async fn call_within<T, F, Fut>(
        &self,
        deadline: Duration,
        what: &str,
        op: F,
    ) -> Result<(T, u32), StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let (url, c) = &self.clients[i];
            attempts += 1;
            let budget = ATTEMPT
                .min(deadline.saturating_sub(start.elapsed()))
                .max(Duration::from_millis(100));
            let failed = match tokio::time::timeout(budget, op(c.clone())).await {
                Ok(Ok(v)) => return Ok((v, attempts)),
                Ok(Err(e)) => match classify(url, e) {
                    Failure::Final(e) => return Err(e),
                    Failure::Retry(e) => e,
                },
                Err(_) => StoreError::Timeout(format!(
                    "etcd {url}: no answer within {:.1}s",
                    budget.as_secs_f32()
                )),
            };
            tracing::debug!(member = %url, what, error = %failed, "etcd request failed; trying the next member");
            // Move on unless another request already did.
            let _ =
                self.current
                    .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            // Each member once without waiting, then back off between rounds.
            let pause = if attempts as usize % n == 0 {
                delay
            } else {
                Duration::ZERO
            };
            if start.elapsed() + pause >= deadline {
                let secs = start.elapsed().as_secs_f32();
                return Err(match failed {
                    StoreError::Timeout(m) => StoreError::Timeout(format!(
                        "{what}: {attempts} attempts over {secs:.1}s, last: {m}"
                    )),
                    e => StoreError::Unavailable(format!(
                        "{what}: {attempts} attempts over {secs:.1}s on {n} member(s), last: {e}"
                    )),
                });
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

impl Etcd {
    /// Clients for every member (URLs like "http://127.0.0.1:2379"), then one read to
    /// make sure some member answers (a clear error now rather than at the first use).
    pub fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Etcd, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Io("no etcd endpoints".into()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("etcd runtime: {e}")))?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // A member cut off from its leader says so at once instead of hanging, and
            // cancels its watches, which then move to another member.
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some(t) = tls {
            opts = opts.with_tls(tls_options(t)?);
        }
        let eps = endpoints.to_vec();
        // Not `block_on`: the caller may itself be inside a tokio runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let mut clients = Vec::new();
            for url in eps {
                // Lazy: connecting does no I/O, so a member that is down now is kept.
                match Client::connect([url.as_str()], Some(opts.clone())).await {
                    Ok(c) => clients.push((url, c)),
                    Err(e) => {
                        let _ = tx.send(Err(StoreError::Io(format!("etcd {url}: {e}"))));
                        return;
                    }
                }
            }
            let members = Members {
                clients,
                current: AtomicUsize::new(0),
            };
            // Short: the caller says why and tries again.
            let probe = members
                .call_within(ATTEMPT, "connect", |mut c| async move {
                    c.get("/", Some(GetOptions::new().with_count_only())).await
                })
                .await;
            let _ = tx.send(probe.map(|_| members));
        });
        match rx.recv().expect("etcd connect finished") {
            Ok(members) => Ok(Etcd {
                rt: Arc::new(rt),
                members: Arc::new(members),
            }),
            Err(e) => {
                // Dropping a runtime blocks, which panics inside an async context: let
                // its threads go in the background instead.
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    /// Run `f` on the etcd runtime and wait for it.
    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("etcd call finished")
    }

    pub fn revision(&self) -> Result<i64, StoreError> {
        let m = self.members.clone();
        self.run(async move {
            let (r, _) = m
                .call("revision", |mut c| async move {
                    c.get("/", Some(GetOptions::new().with_count_only())).await
                })
                .await?;
            r.header()
                .map(|h| h.revision())
                .ok_or_else(|| StoreError::Io("etcd answered without a header".into()))
        })
    }

    /// A linearizable read within 2 s (kube-apiserver's etcd health check timeout): it
    /// answers only with a leader and quorum.
    pub fn check(&self) -> Result<(), StoreError> {
        let m = self.members.clone();
        self.run(async move {
            m.call_within(Duration::from_secs(2), "health check", |mut c| async move {
                c.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await
            .map(drop)
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let m = self.members.clone();
        let key = key.to_string();
        self.run(async move {
            let what = format!("get {key}");
            let (r, _) = m
                .call(&what, |mut c| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })
                .await?;
            Ok(r.kvs().first().map(kv_of))
        })
    }

    /// A page of the range under `prefix` after `after`, at revision `at` (0: now).
    pub fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        at: i64,
    ) -> Result<Page, StoreError> {
        let m = self.members.clone();
        // The first key after `after`: itself with a zero byte appended.
        let start = match after {
            Some(a) if a >= prefix => format!("{a}\0"),
            _ => prefix.to_string(),
        };
        let end = super::prefix_end(prefix);
        let what = format!("list {prefix}");
        self.run(async move {
            let (r, _) = m
                .call(&what, |mut c| {
                    let mut o = GetOptions::new().with_range(end.clone());
                    if limit > 0 {
                        o = o.with_limit(limit as i64);
                    }
                    if at > 0 {
                        o = o.with_revision(at);
                    }
                    let start = start.clone();
                    async move { c.get(start, Some(o)).await }
                })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => StoreError::Compacted {
                        requested: at,
                        compacted: 0,
                    },
                    e => e,
                })?;
            let kvs: Vec<KeyValue> = r.kvs().iter().map(kv_of).collect();
            let revision = match at {
                0 => r
                    .header()
                    .map(|h| h.revision())
                    .ok_or_else(|| StoreError::Io("etcd answered without a header".into()))?,
                at => at,
            };
            Ok(Page {
                remaining: r.count() - kvs.len() as i64,
                kvs,
                revision,
            })
        })
    }

    /// The compare a precondition stands for (None: no condition).
    fn compare(key: &str, pre: Precondition) -> Option<Compare> {
        match pre {
            Precondition::None => None,
            Precondition::Absent => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
            Precondition::Exists => Some(Compare::create_revision(key, CompareOp::Greater, 0)),
            Precondition::Revision(r) => Some(Compare::mod_revision(key, CompareOp::Equal, r)),
        }
    }

    /// Why a transaction's compare failed, from the key's current value.
    fn failure(key: &str, pre: Precondition, cur: Option<KeyValue>) -> StoreError {
        match (pre, cur) {
            (Precondition::Absent, _) => StoreError::AlreadyExists(key.into()),
            (_, None) => StoreError::NotFound(key.into()),
            (Precondition::Revision(r), Some(kv)) => StoreError::Conflict {
                key: key.into(),
                expected: r,
                actual: kv.mod_revision,
            },
            (_, Some(_)) => StoreError::Io(format!("etcd transaction on {key} failed")),
        }
    }

    /// Run `op` on `key` under `pre`, reading the previous value in the same transaction.
    /// Returns whether it applied, the value before (or, if it did not apply, the current
    /// value), the revision of the answer, and how many attempts it took.
    fn txn(
        &self,
        key: &str,
        pre: Precondition,
        op: TxnOp,
        must_exist: bool,
    ) -> Result<(bool, Option<KeyValue>, i64, u32), StoreError> {
        let m = self.members.clone();
        let k = key.to_string();
        let mut compares: Vec<Compare> = Self::compare(key, pre).into_iter().collect();
        if must_exist && !matches!(pre, Precondition::Exists | Precondition::Revision(_)) {
            compares.push(Compare::create_revision(key, CompareOp::Greater, 0));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::get(k.clone(), None), op])
            .or_else(vec![TxnOp::get(k.clone(), None)]);
        let (r, attempts) = self.run(async move {
            let what = format!("write {k}");
            m.call(&what, |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
        })?;
        let prev = r
            .op_responses()
            .into_iter()
            .find_map(|o| match o {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(kv_of)),
                _ => None,
            })
            .flatten();
        Ok((
            r.succeeded(),
            prev,
            r.header().map_or(0, |h| h.revision()),
            attempts,
        ))
    }

    pub fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<KeyValue, StoreError> {
        let (ok, prev, rev, attempts) =
            self.txn(key, pre, TxnOp::put(key, value.clone(), None), false)?;
        if !ok {
            // An earlier attempt whose answer was lost may have been the write that
            // moved the key on: if the key now holds exactly our value, it was.
            if attempts > 1 {
                if let Some(cur) = prev.as_ref().filter(|c| *c.value == *value) {
                    let landed = match pre {
                        Precondition::Absent => true,
                        Precondition::Revision(r) => cur.mod_revision > r,
                        _ => false,
                    };
                    if landed {
                        return Ok(cur.clone());
                    }
                }
            }
            return Err(Self::failure(key, pre, prev));
        }
        Ok(KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        })
    }

    pub fn delete(&self, key: &str, pre: Precondition) -> Result<KeyValue, StoreError> {
        let (ok, prev, _, attempts) = self.txn(key, pre, TxnOp::delete(key, None), true)?;
        match (ok, prev) {
            (true, Some(p)) => Ok(p),
            (false, None) if attempts > 1 => Err(StoreError::Timeout(format!(
                "delete {key}: an attempt whose answer was lost may have deleted it"
            ))),
            (_, prev) => {
                let pre = match pre {
                    Precondition::None => Precondition::Exists,
                    p => p,
                };
                Err(Self::failure(key, pre, prev))
            }
        }
    }

    /// Events under the prefixes after revision `from` (0: from now on). The watch follows
    /// the cluster: when its member fails it resumes on another from the last revision
    /// it delivered, for as long as its consumer holds it (as kube-apiserver's watch cache
    /// keeps watches open while etcd is away); it ends, with an error, only when that
    /// revision is compacted.
    pub fn watch_many(&self, prefixes: &[&str], from: i64) -> Result<Watch, StoreError> {
        let from = match from {
            0 => self.revision()?,
            f => f,
        };
        let (tx, rx) = flume::unbounded();
        let mut stops = Vec::new();
        let mut settled = Vec::new();
        for p in prefixes {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (m, tx, prefix) = (self.members.clone(), tx.clone(), p.to_string());
            let s = Arc::new(std::sync::atomic::AtomicI64::new(0));
            let progress = s.clone();
            self.rt
                .spawn(async move { follow(m, prefix, from, tx, stopped, progress).await });
            stops.push(stop);
            settled.push(s);
        }
        Ok(Watch::new(rx, stops).with_settled(settled))
    }

    pub fn compact(&self, rev: i64) -> Result<(), StoreError> {
        let m = self.members.clone();
        self.run(async move {
            m.call("compact", |mut c| async move { c.compact(rev, None).await })
                .await
                .map(drop)
        })
    }
}

type Sink = flume::Sender<Result<Event, StoreError>>;

/// A store event from an etcd one.
fn event_of(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    let prev = e.prev_kv().map(kv_of);
    Some(match e.event_type() {
        etcd_client::EventType::Put => Event {
            kind: EventKind::Put,
            kv: kv_of(kv),
            prev,
        },
        etcd_client::EventType::Delete => Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: Vec::new().into(),
                create_revision: 0,
                mod_revision: kv.mod_revision(),
                version: 0,
            },
            prev,
        },
    })
}

/// Whether a watch answer is etcd's progress report: no events, nothing created or
/// cancelled, and the revision up to which the stream has sent everything.
fn progress_of(r: &etcd_client::WatchResponse) -> Option<i64> {
    let quiet = r.events().is_empty() && !r.created() && !r.canceled() && r.compact_revision() == 0;
    r.header()
        .map(|h| h.revision())
        .filter(|rev| quiet && *rev > 0)
}

/// How often a watch asks etcd how far it has been sent everything (for the
/// bookmarks of idle API watches; kube-apiserver's watch cache asks likewise).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Keep a watch of `prefix` going from revision `last` across members until the
/// consumer drops it (`stopped`) or it cannot go on (the error is its last item).
/// `settled` follows etcd's progress answers.
async fn follow(
    m: Arc<Members>,
    prefix: String,
    mut last: i64,
    tx: Sink,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    settled: Arc<std::sync::atomic::AtomicI64>,
) {
    let n = m.clients.len();
    let mut down_since: Option<Instant> = None;
    let mut nagged = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let i = m.current.load(Ordering::Relaxed) % n;
        let (url, c) = &m.clients[i];
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(last + 1);
        let mut c = c.clone();
        let opened = tokio::select! {
            r = tokio::time::timeout(ATTEMPT, c.watch(prefix.clone(), Some(opts))) => r,
            _ = &mut stopped => return,
        };
        let opened_at = Instant::now();
        let why = match opened {
            Ok(Ok((mut watcher, mut stream))) => {
                let mut ask = tokio::time::interval(PROGRESS_EVERY);
                let why = loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = ask.tick() => {
                            // The answer comes on the stream, after every event before it.
                            let _ = watcher.request_progress().await;
                            continue;
                        }
                        _ = &mut stopped => {
                            let _ = watcher.cancel().await;
                            return;
                        }
                    };
                    match msg {
                        Ok(Some(r)) if progress_of(&r).is_some() => {
                            let rev = progress_of(&r).unwrap_or(0);
                            settled.fetch_max(rev, Ordering::SeqCst);
                        }
                        Ok(Some(r)) if r.canceled() && r.compact_revision() > 0 => {
                            let _ = tx.send(Err(StoreError::Compacted {
                                requested: last,
                                compacted: r.compact_revision(),
                            }));
                            return;
                        }
                        Ok(Some(r)) if r.canceled() => {
                            break format!("canceled: {}", r.cancel_reason());
                        }
                        Ok(Some(r)) => {
                            down_since = None;
                            delay = Duration::from_millis(100);
                            for ev in r.events().iter().filter_map(event_of) {
                                last = ev.revision();
                                if tx.send(Ok(ev)).is_err() {
                                    let _ = watcher.cancel().await;
                                    return;
                                }
                            }
                        }
                        Ok(None) => break "stream closed".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                // A watch that held a while was a recovery; one cancelled at once (a
                // member without a leader) was not.
                if opened_at.elapsed() > ATTEMPT {
                    down_since = None;
                }
                why
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", ATTEMPT.as_secs()),
        };
        match down_since {
            None => {
                tracing::warn!(member = %url, prefix = %prefix, revision = last, reason = %why, "etcd watch lost; resuming on the next member");
                down_since = Some(Instant::now());
                nagged = Instant::now();
            }
            Some(since) if nagged.elapsed() >= WATCH_NAG => {
                tracing::warn!(prefix = %prefix, revision = last, reason = %why, down_for = ?since.elapsed(), "no etcd member takes the watch back yet");
                nagged = Instant::now();
            }
            Some(_) => {
                tracing::debug!(member = %url, prefix = %prefix, reason = %why, "etcd watch not resumed")
            }
        }
        let _ = m
            .current
            .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stopped => return,
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
