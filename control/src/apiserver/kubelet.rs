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
        Ok(KubeletClient { agent })
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

/// GET pods/{name}/log, streamed from the node's kubelet.
pub async fn pod_log(
    c: &Ctx<'_>,
    client: Option<KubeletClient>,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let ns = c.ns.unwrap_or("default");
    let pod = c
        .store
        .get(&c.r.key(c.ns, name))
        .map(|kv| decode(&kv))
        .ok_or_else(|| ApiError::not_found("pods", name))?;
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
        .map(|kv| decode(&kv))
        .ok_or_else(|| ApiError::not_found("nodes", node_name))?;
    let base = endpoint(&node).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("node {node_name} has no address"),
        )
    })?;
    let client = client.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this API server has no kubelet client (serve it over HTTPS)",
        )
    })?;
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
