//! The store on etcd v3, for several API servers (and controller managers) on one
//! cluster state. Revisions, create/mod revisions and versions are etcd's own; a
//! precondition is a transaction compare; a watch is an etcd watch from a revision.
//!
//! The callers are synchronous (controller threads, and handlers that already block on
//! the embedded store's fsync), so each call runs on this backend's own tokio runtime and
//! the caller waits on a channel: that works from any thread, async ones included.

use super::{Event, EventKind, KeyValue, Precondition, StoreError, Watch};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::future::Future;
use std::sync::Arc;

#[derive(Clone)]
pub struct Etcd {
    rt: Arc<tokio::runtime::Runtime>,
    client: Client,
}

fn err(e: etcd_client::Error) -> StoreError {
    StoreError::Io(format!("etcd: {e}"))
}

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

impl Etcd {
    pub fn connect(endpoints: &[String]) -> Result<Etcd, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("etcd runtime: {e}")))?;
        let eps = endpoints.to_vec();
        // Not `block_on`: the caller may itself be inside a tokio runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let r = async move {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(std::time::Duration::from_secs(5))
                    .with_timeout(std::time::Duration::from_secs(30));
                let mut c = Client::connect(eps, Some(opts)).await?;
                // Fail now, with a clear error, if no member answers (a stopped member
                // still accepts connections: bound the first request too).
                let probe = c.get("/", Some(GetOptions::new().with_count_only()));
                match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
                    Ok(r) => r.map(drop)?,
                    Err(_) => {
                        return Err(etcd_client::Error::InvalidArgs(
                            "no answer within 5s".into(),
                        ))
                    }
                }
                Ok::<_, etcd_client::Error>(c)
            }
            .await;
            let _ = tx.send(r);
        });
        let client = match rx.recv().expect("etcd connect finished") {
            Ok(c) => c,
            Err(e) => {
                // Dropping a runtime blocks, which panics inside an async context: let
                // its threads go in the background instead.
                rt.shutdown_background();
                return Err(StoreError::Io(format!(
                    "connect to etcd {endpoints:?}: {e}"
                )));
            }
        };
        Ok(Etcd {
            rt: Arc::new(rt),
            client,
        })
    }

    /// Run `f` on the etcd runtime and wait for it.
    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("etcd call finished")
    }

    pub fn revision(&self) -> i64 {
        let mut c = self.client.clone();
        self.run(async move {
            c.get("/", Some(GetOptions::new().with_count_only()))
                .await
                .ok()
                .and_then(|r| r.header().map(|h| h.revision()))
                .unwrap_or(0)
        })
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let mut c = self.client.clone();
        let key = key.to_string();
        self.run(async move { c.get(key, None).await.ok()?.kvs().first().map(kv_of) })
    }

    pub fn list(&self, prefix: &str) -> (Vec<KeyValue>, i64) {
        let mut c = self.client.clone();
        let prefix = prefix.to_string();
        self.run(async move {
            match c.get(prefix, Some(GetOptions::new().with_prefix())).await {
                Ok(r) => (
                    r.kvs().iter().map(kv_of).collect(),
                    r.header().map_or(0, |h| h.revision()),
                ),
                Err(_) => (Vec::new(), 0),
            }
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
    /// Returns (previous value, revision of the write).
    fn txn(
        &self,
        key: &str,
        pre: Precondition,
        op: TxnOp,
        must_exist: bool,
    ) -> Result<(Option<KeyValue>, i64), StoreError> {
        let mut c = self.client.clone();
        let k = key.to_string();
        let mut compares: Vec<Compare> = Self::compare(key, pre).into_iter().collect();
        if must_exist && !matches!(pre, Precondition::Exists | Precondition::Revision(_)) {
            compares.push(Compare::create_revision(key, CompareOp::Greater, 0));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::get(k.clone(), None), op])
            .or_else(vec![TxnOp::get(k.clone(), None)]);
        let r = self.run(async move { c.txn(txn).await }).map_err(err)?;
        let prev = r.op_responses().into_iter().find_map(|o| match o {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(kv_of)),
            _ => None,
        });
        let prev = prev.flatten();
        if !r.succeeded() {
            let pre = if must_exist && pre == Precondition::None {
                Precondition::Exists
            } else {
                pre
            };
            return Err(Self::failure(key, pre, prev));
        }
        Ok((prev, r.header().map_or(0, |h| h.revision())))
    }

    pub fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<KeyValue, StoreError> {
        let (prev, rev) = self.txn(key, pre, TxnOp::put(key, value.clone(), None), false)?;
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        })
    }

    pub fn delete(&self, key: &str, pre: Precondition) -> Result<KeyValue, StoreError> {
        let (prev, _) = self.txn(key, pre, TxnOp::delete(key, None), true)?;
        prev.ok_or_else(|| StoreError::NotFound(key.into()))
    }

    /// Events under `prefix` after revision `from` (0: from now on).
    pub fn watch(&self, prefix: &str, from: i64) -> Result<Watch, StoreError> {
        let mut c = self.client.clone();
        let mut opts = WatchOptions::new().with_prefix().with_prev_key();
        if from > 0 {
            opts = opts.with_start_revision(from + 1);
        }
        // A compacted start revision: etcd refuses a read at it, which says so up front
        // (the watch itself would only report it later, on its stream).
        if from > 0 {
            let mut c = self.client.clone();
            let p = prefix.to_string();
            let probe = self.run(async move {
                c.get(
                    p,
                    Some(GetOptions::new().with_revision(from).with_count_only()),
                )
                .await
            });
            if let Err(e) = probe {
                if e.to_string().contains("compacted") {
                    return Err(StoreError::Compacted {
                        requested: from,
                        compacted: 0,
                    });
                }
                return Err(err(e));
            }
        }
        let p = prefix.to_string();
        let (mut watcher, mut stream) = self
            .run(async move { c.watch(p, Some(opts)).await })
            .map_err(err)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let forward = move |r: &etcd_client::WatchResponse| -> bool {
            for e in r.events() {
                let Some(kv) = e.kv() else { continue };
                let prev = e.prev_kv().map(kv_of);
                let ev = match e.event_type() {
                    etcd_client::EventType::Put => Event {
                        kind: EventKind::Put,
                        kv: kv_of(kv),
                        prev,
                    },
                    etcd_client::EventType::Delete => Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: kv.mod_revision(),
                            version: 0,
                        },
                        prev,
                    },
                };
                if tx.send(ev).is_err() {
                    return false;
                }
            }
            true
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        self.rt.spawn(async move {
            // Until the Watch is dropped or the watch ends.
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(r)) if !r.canceled() && forward(&r) => {}
                        _ => break,
                    },
                    _ = &mut stopped => break,
                }
            }
            let _ = watcher.cancel().await;
        });
        Ok(Watch::new(rx, Some(stop)))
    }

    pub fn compact(&self, rev: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        self.run(async move { c.compact(rev, None).await })
            .map(drop)
            .map_err(err)
    }
}
