//! The Kubernetes REST API over the embedded store, close enough that the real kubectl
//! works unchanged: discovery, /openapi/v3, create/get/list/update/patch/delete, watch,
//! label and field selectors, and Table output for `kubectl get`.
//!
//! Objects are stored as JSON under `/registry/<group>/<plural>/<namespace>/<name>`;
//! `metadata.resourceVersion` is the store's mod_revision of the key.

mod allocator;
mod apply;
pub mod authn;
pub mod authz;
mod discovery;
pub(crate) mod kinds;
pub mod kubelet;
pub(crate) mod objects;
mod protobuf;
pub mod resources;
mod review;
mod schemas;
mod selector;
pub(crate) mod status;
mod strategic;
pub(crate) mod table;
pub mod tls;

use crate::store::Store;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use status::ApiError;
use std::sync::Arc;

pub struct ApiServer {
    pub store: Store,
    /// How to reach kubelets (pods/log); None without a cluster PKI.
    pub kubelet: Option<kubelet::KubeletClient>,
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

/// The HTTP router; serve it with `axum::serve`.
pub fn router(store: Store) -> axum::Router {
    router_with(store, None)
}

/// The router, with a client for the kubelets (pods/log is proxied to them).
pub fn router_with(store: Store, kubelet: Option<kubelet::KubeletClient>) -> axum::Router {
    // The system namespaces, as kube-apiserver's bootstrap controller keeps them: now,
    // or in the background until the store takes them.
    let bootstrap = |store: &Store| {
        objects::ensure_default_namespaces(store).and_then(|_| authz::bootstrap::ensure(store))
    };
    if let Err(e) = bootstrap(&store) {
        tracing::warn!(error = %e, "system namespaces not created yet; retrying");
        let store = store.clone();
        std::thread::spawn(move || {
            let mut pause = std::time::Duration::from_millis(500);
            while let Err(e) = bootstrap(&store) {
                tracing::warn!(error = %e, "system namespaces not created yet; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
        });
    }
    let state = Arc::new(ApiServer { store, kubelet });
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let state = state.clone();
        async move {
            let path = req.uri().path().trim_end_matches('/');
            if req.method() == Method::GET {
                if let Some(r) = health(&state.store, path).await {
                    return r;
                }
            }
            // exec/attach/portforward need the connection upgrade, kept aside here.
            let (mut parts, body) = req.into_parts();
            let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            let started = std::time::Instant::now();
            let who = parts.extensions.get::<tls::User>().cloned();
            let user = who
                .as_ref()
                .map_or_else(|| "system:anonymous".to_string(), |u| u.name.clone());
            let (verb, uri) = (verb_of(&parts.method, &parts.uri), parts.uri.clone());
            // kube-apiserver's request size limit (--max-request-bytes: 3 MiB).
            const MAX_BODY: usize = 3 << 20;
            let too_big = parts
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|n| n > MAX_BODY);
            let body = if too_big {
                // Read it (to a bound) and drop it, so the client, still sending, gets
                // the answer rather than a broken connection.
                let _ = axum::body::to_bytes(body, 64 << 20).await;
                Err(format!("Request entity too large: limit is {MAX_BODY}"))
            } else {
                axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
                    let e = e.to_string();
                    if e.contains("length limit") {
                        format!("Request entity too large: limit is {MAX_BODY}")
                    } else {
                        format!("request body: {e}")
                    }
                })
            };
            let resp = match body {
                Ok(body) => {
                    // Store calls block (up to the store's deadline when it cannot
                    // answer): on the blocking pool, so the async workers keep serving
                    // (/livez, watches).
                    let rt = tokio::runtime::Handle::current();
                    let run = move || {
                        rt.block_on(handle(
                            state,
                            parts.method,
                            parts.uri,
                            parts.headers,
                            body,
                            upgrade,
                            who,
                        ))
                    };
                    match tokio::task::spawn_blocking(run).await {
                        Ok(r) => r.unwrap_or_else(|e| e.into_response()),
                        Err(e) => ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            format!("request handler failed: {e}"),
                        )
                        .into_response(),
                    }
                }
                Err(e) if e.starts_with("Request entity too large") => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", e)
                        .into_response()
                }
                Err(e) => ApiError::bad_request(e).into_response(),
            };
            // One line per request, as kube-apiserver's httplog.
            tracing::info!(
                verb,
                uri = %uri,
                user = %user,
                status = resp.status().as_u16(),
                latency_ms = format!("{:.3}", started.elapsed().as_secs_f64() * 1e3),
                "request"
            );
            resp
        }
    })
}

/// The request's verb as Kubernetes names it (watch and list are GETs).
fn verb_of(method: &Method, uri: &Uri) -> &'static str {
    let watch = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match *method {
        Method::GET if watch || uri.path().contains("/watch/") => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// /livez: the process serves. /readyz and /healthz: and its store answers (as
/// kube-apiserver's etcd check): 500 with the reason otherwise, so a load balancer
/// stops sending requests this server cannot answer.
async fn health(store: &Store, path: &str) -> Option<Response> {
    let (kind, check) = match path {
        "/livez" | "/livez/ping" => ("livez", None),
        "/readyz" | "/healthz" | "/readyz/etcd" | "/healthz/etcd" => {
            let store = store.clone();
            let r = tokio::task::spawn_blocking(move || store.check())
                .await
                .unwrap_or_else(|e| Err(crate::store::StoreError::Io(e.to_string())));
            (
                path.trim_start_matches('/').split('/').next().unwrap_or(""),
                Some(r),
            )
        }
        _ => return None,
    };
    Some(match check {
        None | Some(Ok(())) => (StatusCode::OK, "ok").into_response(),
        Some(Err(e)) => {
            tracing::warn!(check = kind, error = %e, "health check failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("[+]ping ok\n[-]etcd failed: {e}\n{kind} check failed\n"),
            )
                .into_response()
        }
    })
}

fn query_map(uri: &Uri) -> std::collections::HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub use skiff_apimachinery::query::percent_decode;

async fn handle(
    s: Arc<ApiServer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    who: Option<tls::User>,
) -> Result<Response, ApiError> {
    let path = uri.path().trim_end_matches('/');
    let q = query_map(&uri);
    let segs: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
    let get = method == Method::GET;
    let user = who.clone().unwrap_or_else(review::unsecured);
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let attrs = authz::Attributes::of(&method, path, watch);
    let decision = authz::authorize(&s.store, &user, &attrs).map_err(authz::store_failure)?;
    if !decision.allowed {
        return Err(authz::forbidden(&user, &attrs, &decision.reason));
    }
    if method == Method::POST {
        if let Some(r) = review::answer(&s.store, &segs, &user, &body)? {
            return Ok(r);
        }
    }
    match segs.as_slice() {
        ["version"] if get => return Ok(json_response(StatusCode::OK, &discovery::version())),
        ["api"] | ["apis"] if get => {
            let core = segs[0] == "api";
            let accept = headers
                .get_all("accept")
                .iter()
                .filter_map(|h| h.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            if let Some(v) = discovery::aggregated_version(&accept) {
                let ct = format!(
                    "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                );
                return Ok((
                    StatusCode::OK,
                    [("content-type", ct.as_str()), ("vary", "Accept")],
                    discovery::aggregated(core, v).to_string(),
                )
                    .into_response());
            }
            let legacy = if core {
                discovery::api_versions()
            } else {
                discovery::api_groups()
            };
            return Ok(json_response(StatusCode::OK, &legacy));
        }
        ["api", v] if get => {
            return discovery::resource_list("", v)
                .map(|l| json_response(StatusCode::OK, &l))
                .ok_or_else(|| ApiError::not_found("group version", v))
        }
        ["apis", g, v] if get => {
            return discovery::resource_list(g, v)
                .map(|l| json_response(StatusCode::OK, &l))
                .ok_or_else(|| ApiError::not_found("group version", &format!("{g}/{v}")))
        }
        ["openapi", "v2"] if get => {
            return Ok((
                StatusCode::OK,
                [(
                    "content-type",
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )],
                discovery::openapi_v2_protobuf(),
            )
                .into_response())
        }
        ["openapi", "v3"] if get => {
            return Ok(json_response(StatusCode::OK, &discovery::openapi_root()))
        }
        ["openapi", "v3", rest @ ..] if get => {
            return discovery::openapi_gv(&rest.join("/"))
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::not_found("openapi document", &rest.join("/")))
        }
        _ => {}
    }
    // Resource paths: /api/v1/... or /apis/<group>/<version>/...
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::not_found("path", path)),
    };
    // [namespaces, ns, plural, name?, sub?] is namespaced unless it is the namespaces resource itself.
    let (ns, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, plural, ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            (Some(*ns), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, sub] => (*p, Some(*n), Some(*sub)),
        _ => return Err(ApiError::not_found("path", path)),
    };
    let r = resources::find(group, version, plural)
        .ok_or_else(|| ApiError::not_found("resource", plural))?;
    // The field manager of writes: asked for, else the user agent's program name
    // ("kubectl/v1.32.4 (linux/amd64) …" is "kubectl"), as kube-apiserver defaults it.
    let manager = q
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| {
            headers
                .get("user-agent")
                .and_then(|h| h.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    // ?dryRun=All: everything a write does but the write (kubectl --dry-run=server, diff).
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )))
        }
    };
    let validation = objects::FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    if sub == Some("scale") && kinds::of(r.kind).scalable() {
        let ct = headers
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let ns_ctx = objects::Ctx {
            store: &s.store,
            r,
            ns,
            table: false,
            manager: &manager,
            dry_run,
            validation,
            warnings: Default::default(),
            user: None,
        };
        return objects::scale(&ns_ctx, name.unwrap_or(""), &method, &ct, &body);
    }
    if let (Some(sub @ ("exec" | "attach" | "portforward")), "Pod") = (sub, r.kind) {
        let ctx = objects::Ctx {
            store: &s.store,
            r,
            ns,
            table: false,
            manager: &manager,
            dry_run,
            validation,
            warnings: Default::default(),
            user: None,
        };
        return kubelet::pod_stream(
            &ctx,
            s.kubelet.clone(),
            name.unwrap_or(""),
            sub,
            &uri,
            &headers,
            upgrade,
        )
        .await;
    }
    if sub == Some("log") && r.kind == "Pod" && method == Method::GET {
        let ctx = objects::Ctx {
            store: &s.store,
            r,
            ns,
            table: false,
            manager: &manager,
            dry_run,
            validation,
            warnings: Default::default(),
            user: None,
        };
        return kubelet::pod_log(&ctx, s.kubelet.clone(), name.unwrap_or(""), &q).await;
    }
    if sub == Some("binding") && r.kind == "Pod" && method == Method::POST {
        let ctx = objects::Ctx {
            store: &s.store,
            r,
            ns,
            table: false,
            manager: &manager,
            dry_run,
            validation,
            warnings: Default::default(),
            user: None,
        };
        return objects::bind(&ctx, name.unwrap_or(""), &body);
    }
    let served = |s: &str| match s {
        "status" => kinds::of(r.kind).has_status(),
        // kube's namespace finalize: only spec.finalizers is written.
        "finalize" => r.kind == "Namespace" && method == Method::PUT,
        // A CertificateSigningRequest's verdict: only status.conditions is written.
        "approval" => r.kind == "CertificateSigningRequest" && method == Method::PUT,
        _ => false,
    };
    if sub.is_some_and(|s| !served(s)) {
        // As kube-apiserver's answer for a route it does not serve: details present but
        // naming nothing (kubectl debug reads that as "ephemeral containers are
        // disabled"; a named one would mean the pod is missing).
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource ({} {}/{})",
                sub.unwrap(),
                r.qualified(),
                name.unwrap_or("")
            ),
        );
        e.details = Some(serde_json::json!({}));
        return Err(e);
    }
    // Protobuf bodies (kubectl's typed clients) are decoded for the kinds they create;
    // anything else gets 415 with the reason.
    let mut body = body;
    if matches!(method, Method::POST | Method::PUT)
        && headers
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|ct| ct.contains("protobuf"))
    {
        let v = protobuf::decode(&body).map_err(|e| {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json ({e})"))
        })?;
        body = Bytes::from(v.to_string());
    }
    // What the authorizer could not see, judged on the decoded object: a node creates
    // only its own Node and Lease (NodeRestriction), and writes of RBAC objects grant
    // no more than the writer holds.
    if let Err(why) = authz::node::restrict_create(&user, &attrs, &body) {
        return Err(authz::forbidden(&user, &attrs, &why));
    }
    let escalation =
        authz::escalation::check(&s.store, &user, &attrs, &body).map_err(authz::store_failure)?;
    if !escalation.allowed {
        return Err(authz::forbidden(&user, &attrs, &escalation.reason));
    }
    let table = headers
        .get_all("accept")
        .iter()
        .any(|h| h.to_str().unwrap_or("").contains("as=Table"));
    let ctx = objects::Ctx {
        store: &s.store,
        r,
        ns,
        table,
        manager: &manager,
        dry_run,
        validation,
        warnings: Default::default(),
        user: Some(&user),
    };
    let res = match (method, name) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            Ok(objects::watch(&ctx, &q)?)
        }
        (Method::GET, None) => objects::list(&ctx, &q),
        (Method::GET, Some(n)) => objects::get(&ctx, n),
        (Method::POST, None) => objects::create(&ctx, &body),
        (Method::PUT, Some(n)) if sub == Some("finalize") => objects::finalize(&ctx, n, &body),
        (Method::PUT, Some(n)) if sub == Some("approval") => objects::approve(&ctx, n, &body),
        (Method::PUT, Some(n)) => objects::update(&ctx, n, &body, sub.is_some()),
        (Method::PATCH, Some(n)) => {
            let ct = headers
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            objects::patch(&ctx, n, &ct, &body, sub.is_some(), &q)
        }
        (Method::DELETE, Some(n)) => objects::delete(&ctx, n, &q, &body),
        (m, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{m} is not supported on {path}"),
        )),
    };
    // Warnings (unknown fields under fieldValidation=Warn) as kube sends them; kubectl
    // prints each as "Warning: …".
    let mut warnings = ctx.warnings.take();
    warnings.dedup();
    res.map(|mut r| {
        for w in warnings {
            let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                r.headers_mut().append("warning", v);
            }
        }
        r
    })
}

pub(crate) fn body_stream(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
