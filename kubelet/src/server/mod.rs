//! The kubelet API (HTTPS, port 10250 by default): what the API server proxies
//! `kubectl logs` to. Clients must present a certificate from the cluster CA in the
//! system:masters group (the API server's kubelet-client certificate, or an admin).

pub mod logs;
pub mod streaming;

use crate::pods::cri_config;
use crate::Config;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use skiff_apimachinery::tls::User;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

pub struct ApiState {
    pub cfg: Config,
    pub pods: Store<Pod>,
    pub cri: skiff_cri::client::Clients,
}

impl ApiState {
    /// A pod bound to this node, by namespace and name.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.state().into_iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name)
        })
    }
}

/// Only the API server's kubelet client and admins (group system:masters) may use the API.
fn admin(user: Option<&User>) -> bool {
    user.is_some_and(|u| u.groups.iter().any(|g| g == "system:masters"))
}

pub fn is_admin<B>(req: &axum::http::Request<B>) -> bool {
    admin(req.extensions().get::<User>())
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(streaming::exec).post(streaming::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(streaming::attach).post(streaming::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(streaming::port_forward).post(streaming::port_forward),
        )
        .with_state(state)
}

fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, format!("{msg}\n")).into_response()
}

async fn container_logs(
    State(s): State<Arc<ApiState>>,
    Path((ns, name, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    user: Option<Extension<User>>,
) -> Response {
    if !admin(user.as_ref().map(|Extension(u)| u)) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden: needs a system:masters client certificate",
        );
    }
    let opts = match logs::Options::parse(&q) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(pod) = s.pod(&ns, &name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{name} is not on this node"),
        );
    };
    let known = pod
        .spec
        .as_ref()
        .is_some_and(|sp| sp.containers.iter().any(|c| c.name == container));
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!("container {container:?} is not in pod {ns}/{name}"),
        );
    }
    let dir = std::path::Path::new(&cri_config::log_directory(&s.cfg, &pod)).join(&container);
    let (path, run) = match logs::file(&dir, &container, &opts) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    // File reading and polling happen on a blocking thread; the body streams from it.
    let (store, uid) = (s.pods.clone(), cri_config::pod_uid(&pod).to_string());
    let running = move || {
        store.state().iter().any(|p| {
            cri_config::pod_uid(p) == uid
                && p.status
                    .as_ref()
                    .and_then(|st| st.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.name == container
                                && c.restart_count as u32 == run
                                && c.state.as_ref().is_some_and(|st| st.running.is_some())
                        })
                    })
        })
    };
    tokio::task::spawn_blocking(move || stream(path, opts, tx, running));
    (
        StatusCode::OK,
        [("content-type", "text/plain")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

fn stream(
    path: std::path::PathBuf,
    opts: logs::Options,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    running: impl Fn() -> bool,
) {
    let Ok(mut f) = std::fs::File::open(&path) else {
        return;
    };
    let mut raw = String::new();
    if f.read_to_string(&mut raw).is_err() {
        return;
    }
    // Only whole records now; a half-written last line waits for the next read.
    let cut = raw.rfind('\n').map_or(0, |i| i + 1);
    let mut pos = cut as u64;
    let mut at_start = true;
    let text = logs::render(&raw[..cut], &opts, &mut at_start);
    let text = match opts.tail_lines {
        Some(n) => logs::tail(&text, n),
        None => &text,
    };
    let mut budget = opts.limit_bytes.unwrap_or(usize::MAX);
    let send = |s: &str, budget: &mut usize| -> bool {
        let b = &s.as_bytes()[..s.len().min(*budget)];
        *budget -= b.len();
        b.is_empty() || tx.blocking_send(Ok(b.to_vec())).is_ok()
    };
    if !send(text, &mut budget) || !opts.follow || opts.previous {
        return;
    }
    // Follow: until the client goes, the budget is spent, or the run ends.
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if budget == 0 || tx.is_closed() {
            return;
        }
        let mut more = String::new();
        if f.seek(SeekFrom::Start(pos)).is_err() || f.read_to_string(&mut more).is_err() {
            return;
        }
        let cut = more.rfind('\n').map_or(0, |i| i + 1);
        pos += cut as u64;
        let text = logs::render(&more[..cut], &opts, &mut at_start);
        if !text.is_empty() && !send(&text, &mut budget) {
            return;
        }
        // Nothing new and the run is over: the end of this log.
        if cut == 0 && !running() {
            return;
        }
    }
}
