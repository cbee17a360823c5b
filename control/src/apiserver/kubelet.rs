//! The API server as the kubelets' client: `pods/log` is proxied to the kubelet of the
//! pod's node (`https://<InternalIP>:<kubelet port>/containerLogs/...`), with the API
//! server's client certificate, verifying the kubelet's certificate against the cluster CA.

use super::objects::{decode, Ctx};
use super::status::ApiError;
use crate::pki::Pki;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;

#[derive(Clone)]
pub struct KubeletClient {
    agent: ureq::Agent,
    /// For upgraded connections (exec, attach, port-forward), spliced byte for byte.
    tls: std::sync::Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    pub fn new(pki: &Pki) -> Result<KubeletClient, String> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(pki.ca_cert.as_bytes()).map_err(|e| e.to_string())?;
        let cert =
            Certificate::from_pem(pki.kubelet_client_cert.as_bytes()).map_err(|e| e.to_string())?;
        let key =
            PrivateKey::from_pem(pki.kubelet_client_key.as_bytes()).map_err(|e| e.to_string())?;
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(std::time::Duration::from_secs(5)))
            .build()
            .into();
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()).flatten() {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.kubelet_client_cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{e:?}"))?;
        let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client_key.as_bytes())
            .map_err(|e| format!("{e:?}"))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok(KubeletClient {
            agent,
            tls: std::sync::Arc::new(tls),
        })
    }
}

/// The kubelet URL of a node: its InternalIP (else first address) and kubelet port.
fn endpoint(node: &Value) -> Option<String> {
    let addrs = node["status"]["addresses"].as_array()?;
    let ip = addrs
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addrs.first())?["address"]
        .as_str()?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(10250);
    Some(if ip.contains(':') {
        format!("https://[{ip}]:{port}")
    } else {
        format!("https://{ip}:{port}")
    })
}

/// The kubelet URL (https://ip:port) of a pod's node, and the container meant.
fn target(
    c: &Ctx<'_>,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<(String, String), ApiError> {
    let pod = decode(&super::objects::fetch(c, name)?);
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str().map(str::to_string))
        .collect();
    let container = match q.get("container").filter(|s| !s.is_empty()) {
        Some(x) if containers.contains(x) => x.clone(),
        Some(x) => {
            return Err(ApiError::bad_request(format!(
                "container {x} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let node = c
        .store
        .get(&format!("/registry/core/nodes/{node_name}"))
        .map_err(|e| super::objects::store_err(c.r, name, e))?
        .map(|kv| decode(&kv))
        .ok_or_else(|| ApiError::not_found("nodes", node_name))?;
    let base = endpoint(&node).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("node {node_name} has no address"),
        )
    })?;
    Ok((base, container))
}

/// GET pods/{name}/log, streamed from the node's kubelet.
pub async fn pod_log(
    c: &Ctx<'_>,
    client: Option<KubeletClient>,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (base, container) = target(c, name, q)?;
    let ns = c.ns.unwrap_or("default");
    let client = need_client(client)?;
    let query: Vec<String> = [
        "follow",
        "tailLines",
        "timestamps",
        "sinceSeconds",
        "sinceTime",
        "previous",
        "limitBytes",
    ]
    .iter()
    .filter_map(|k| q.get(*k).map(|v| format!("{k}={v}")))
    .collect();
    let url = format!(
        "{base}/containerLogs/{ns}/{name}/{container}?{}",
        query.join("&")
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    std::thread::spawn(move || {
        let resp = match client.agent.get(&url).call() {
            Ok(r) => r,
            Err(e) => {
                let _ = first_tx.send(Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "InternalError",
                    format!("kubelet: {e}"),
                )));
                return;
            }
        };
        if resp.status() != 200 {
            let code = resp.status().as_u16();
            let body = resp.into_body().read_to_string().unwrap_or_default();
            let _ = first_tx.send(Err(ApiError::new(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                "InternalError",
                format!("kubelet answered {code}: {}", body.trim()),
            )));
            return;
        }
        let _ = first_tx.send(Ok(()));
        let mut r = resp.into_body().into_reader();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0
                || tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
            {
                break;
            }
        }
    });
    first_rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "InternalError",
            "kubelet request failed",
        )
    })??;
    Ok((
        StatusCode::OK,
        [("content-type", "text/plain")],
        super::body_stream(rx),
    )
        .into_response())
}

/// Headers of an upgrade request passed to the kubelet, and of its answer passed back.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "x-stream-protocol-version",
];

/// The kubelet's names for exec/attach options (input, output, error, tty: "1"), from
/// the API's PodExecOptions names; commands pass as they are, still URL-encoded.
fn kubelet_query(api: &str) -> String {
    let mut out = Vec::new();
    for kv in api.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let on = v == "true" || v == "1";
        match k {
            "command" => out.push(kv.to_string()),
            "stdin" | "stdout" | "stderr" | "tty" if on => out.push(format!(
                "{}=1",
                match k {
                    "stdin" => "input",
                    "stdout" => "output",
                    "stderr" => "error",
                    _ => "tty",
                }
            )),
            _ => {}
        }
    }
    match out.is_empty() {
        true => String::new(),
        false => format!("?{}", out.join("&")),
    }
}

/// The kubelet client, which only an HTTPS API server has (it holds the certificate).
fn need_client(client: Option<KubeletClient>) -> Result<KubeletClient, ApiError> {
    client.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this API server has no kubelet client (serve it over HTTPS)",
        )
    })
}

/// pods/{name}/exec|attach|portforward: the client's upgrade (WebSocket or SPDY) goes to
/// the node's kubelet as is; once it answers 101, bytes are spliced both ways.
pub async fn pod_stream(
    c: &Ctx<'_>,
    client: Option<KubeletClient>,
    name: &str,
    sub: &str,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let q = &super::query_map(uri);
    let ns = c.ns.unwrap_or("default").to_string();
    let (base, container) = if sub == "portforward" {
        let mut q2 = q.clone();
        q2.remove("container");
        // Port forwarding is per pod: any container will do for finding the node.
        let first = decode(&super::objects::fetch(c, name)?)["spec"]["containers"][0]["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default();
        q2.insert("container".into(), first);
        target(c, name, &q2)?
    } else {
        target(c, name, q)?
    };
    let client = need_client(client)?;
    let upgrade = upgrade.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{sub} needs an upgraded connection (WebSocket or SPDY)"
        ))
    })?;
    let path = match sub {
        "exec" => format!("/exec/{ns}/{name}/{container}"),
        "attach" => format!("/attach/{ns}/{name}/{container}"),
        _ => format!("/portForward/{ns}/{name}"),
    };
    let query = kubelet_query(uri.query().unwrap_or(""));
    let hostport = base.trim_start_matches("https://").to_string();
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport.as_str(), |(h, _)| h)
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let bad_gateway = |m: String| ApiError::new(StatusCode::BAD_GATEWAY, "InternalError", m);
    let tcp = tokio::net::TcpStream::connect(&hostport)
        .await
        .map_err(|e| bad_gateway(format!("connect to kubelet {hostport}: {e}")))?;
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| bad_gateway(format!("kubelet address {host}: {e}")))?;
    let mut tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| bad_gateway(format!("TLS to kubelet {hostport}: {e}")))?;
    let mut req = format!("GET {path}{query} HTTP/1.1\r\nHost: {hostport}\r\n");
    for (k, v) in headers {
        if UPGRADE_HEADERS.contains(&k.as_str()) {
            req.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or("")));
        }
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| bad_gateway(format!("kubelet: {e}")))?;
    // The kubelet's answer head; bytes after it already belong to the stream.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = tls
            .read(&mut buf)
            .await
            .map_err(|e| bad_gateway(format!("kubelet: {e}")))?;
        if n == 0 {
            return Err(bad_gateway("kubelet closed the connection".into()));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(bad_gateway("kubelet answer head too long".into()));
        }
    };
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    if status != 101 {
        let mut body = rest;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tls.read_to_end(&mut body),
        )
        .await;
        return Err(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            "InternalError",
            format!(
                "kubelet answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        ));
    }
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if UPGRADE_HEADERS.contains(&k.trim().to_ascii_lowercase().as_str()) {
                resp = resp.header(k.trim(), v.trim());
            }
        }
    }
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let mut client_io = hyper_util::rt::TokioIo::new(up);
        if !rest.is_empty() && client_io.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client_io, &mut tls).await;
    });
    resp.body(axum::body::Body::empty())
        .map_err(|e| bad_gateway(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn exec_options_take_the_kubelets_names() {
        let q = "command=sh&command=-c&command=echo%20hi&container=c&stdin=true&stdout=true&stderr=false&tty=false";
        assert_eq!(
            super::kubelet_query(q),
            "?command=sh&command=-c&command=echo%20hi&input=1&output=1"
        );
        assert_eq!(super::kubelet_query(""), "");
    }
}
