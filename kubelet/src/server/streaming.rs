//! exec, attach and port-forward through the kubelet API, as the kubelet serves them for
//! `kubectl exec|attach|port-forward` (proxied by the API server): ask the runtime for a
//! streaming URL (CRI Exec, Attach, PortForward), pass the client's upgrade request
//! there, hand the runtime's answer (101 and its headers) back, then splice the two
//! connections. WebSocket and SPDY alike: the bytes are not interpreted here.

use super::ApiState;
use crate::labels;
use crate::pods::cri_config;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use skiff_cri::v1;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Request headers passed to the runtime's streaming server.
const PASS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, format!("{msg}\n")).into_response()
}

/// Query parameters; `command` repeats.
fn query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            (
                k.to_string(),
                skiff_apimachinery::query::percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn flag(q: &[(String, String)], k: &str) -> bool {
    q.iter()
        .any(|(n, v)| n == k && matches!(v.as_str(), "1" | "true" | "True"))
}

pub async fn exec(
    state: State<Arc<ApiState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    stream(state, "exec", ns, pod, Some(container), req).await
}

pub async fn attach(
    state: State<Arc<ApiState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    stream(state, "attach", ns, pod, Some(container), req).await
}

pub async fn port_forward(
    state: State<Arc<ApiState>>,
    Path((ns, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    stream(state, "portForward", ns, pod, None, req).await
}

async fn stream(
    State(s): State<Arc<ApiState>>,
    kind: &str,
    ns: String,
    name: String,
    container: Option<String>,
    mut req: Request,
) -> Response {
    if !super::is_admin(&req) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden: needs a system:masters client certificate",
        );
    }
    let Some(pod) = s.pod(&ns, &name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{name} is not on this node"),
        );
    };
    let uid = cri_config::pod_uid(&pod).to_string();
    let q = query(req.uri().query());
    let mut rt = s.cri.rt.clone();
    let by_pod = HashMap::from([(labels::POD_UID.to_string(), uid.clone())]);
    let url = match container {
        Some(c) => {
            let mut sel = by_pod.clone();
            sel.insert(labels::CONTAINER_NAME.to_string(), c.clone());
            let found = rt
                .list_containers(v1::ListContainersRequest {
                    filter: Some(v1::ContainerFilter {
                        state: Some(v1::ContainerStateValue {
                            state: v1::ContainerState::ContainerRunning as i32,
                        }),
                        label_selector: sel,
                        ..Default::default()
                    }),
                })
                .await;
            let id = match found {
                Ok(r) => match r.into_inner().containers.into_iter().next() {
                    Some(c) => c.id,
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("container {c} is not running in pod {ns}/{name}"),
                        )
                    }
                },
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
            };
            let (stdin, stdout, stderr, tty) = (
                flag(&q, "input") || flag(&q, "stdin"),
                flag(&q, "output") || flag(&q, "stdout"),
                flag(&q, "error") || flag(&q, "stderr"),
                flag(&q, "tty"),
            );
            let r = if kind == "exec" {
                let cmd: Vec<String> = q
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.clone())
                    .collect();
                if cmd.is_empty() {
                    return error(StatusCode::BAD_REQUEST, "exec needs a command");
                }
                rt.exec(v1::ExecRequest {
                    container_id: id,
                    cmd,
                    tty,
                    stdin,
                    stdout,
                    stderr: stderr && !tty,
                })
                .await
                .map(|r| r.into_inner().url)
            } else {
                rt.attach(v1::AttachRequest {
                    container_id: id,
                    stdin,
                    tty,
                    stdout,
                    stderr: stderr && !tty,
                })
                .await
                .map(|r| r.into_inner().url)
            };
            match r {
                Ok(u) => u,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
            }
        }
        None => {
            let sandboxes = rt
                .list_pod_sandbox(v1::ListPodSandboxRequest {
                    filter: Some(v1::PodSandboxFilter {
                        state: Some(v1::PodSandboxStateValue {
                            state: v1::PodSandboxState::SandboxReady as i32,
                        }),
                        label_selector: by_pod,
                        ..Default::default()
                    }),
                })
                .await;
            let id = match sandboxes.map(|r| r.into_inner().items.into_iter().next()) {
                Ok(Some(sb)) => sb.id,
                Ok(None) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("pod {ns}/{name} has no running sandbox"),
                    )
                }
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
            };
            match rt
                .port_forward(v1::PortForwardRequest {
                    pod_sandbox_id: id,
                    port: Vec::new(),
                })
                .await
            {
                Ok(r) => r.into_inner().url,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
            }
        }
    };
    // http://127.0.0.1:PORT/TOKEN-PATH
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut up = match tokio::net::TcpStream::connect(hostport).await {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("runtime streaming server {hostport}: {e}"),
            )
        }
    };
    let mut head = format!("GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n");
    for (k, v) in req.headers() {
        if PASS.contains(&k.as_str()) {
            if let Ok(v) = v.to_str() {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
    }
    head.push_str("\r\n");
    if let Err(e) = up.write_all(head.as_bytes()).await {
        return error(StatusCode::BAD_GATEWAY, e);
    }
    // The runtime's answer head, and whatever came after it.
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = match up.read(&mut chunk).await {
            Ok(0) | Err(_) => return error(StatusCode::BAD_GATEWAY, "runtime closed the stream"),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return error(StatusCode::BAD_GATEWAY, "runtime answer head too large");
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = text.split("\r\n");
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::builder().status(code);
    for l in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.trim()),
                HeaderValue::try_from(v.trim()),
            ) {
                resp = resp.header(k, v);
            }
        }
    }
    let leftover = buf[end..].to_vec();
    if code != StatusCode::SWITCHING_PROTOCOLS {
        // An error from the runtime (e.g. 400 for a bad protocol): its body as it is.
        let mut body = leftover;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), up.read_to_end(&mut body))
            .await;
        return resp
            .body(Body::from(body))
            .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, e));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(client) = on_upgrade.await else { return };
        let mut client = TokioIo::new(client);
        if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
            return;
        }
        // Either side may end without ceremony: not an error here.
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    });
    resp.body(Body::empty())
        .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, e))
}
