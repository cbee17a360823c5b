//! Serving an API over TLS with client-certificate authentication, as kube-apiserver
//! and the kubelet do: clients present a certificate signed by the cluster CA; its CN is the user and
//! its O entries the groups. Without one, only the health and version endpoints answer;
//! everything else is 401 Unauthorized (a Status kubectl prints).

use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Who made a request, from the verified client certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config(format!("certificate PEM: {e:?}")))?;
    if certs.is_empty() {
        return Err(TlsError::Config("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn pem_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Config(format!("key PEM: {e:?}")))
}

/// The rustls server configuration from PEM texts: the client CA, the serving
/// certificate chain and its key. Client certificates are optional at the TLS level
/// but verified against the CA when sent. The API server and the kubelet both serve so.
pub fn server_config_from(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // Explicit provider: several may be linked in; the choice must not depend on that.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(cert_pem)?, pem_key(key_pem)?)
        .map_err(|e| TlsError::Config(format!("serving certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The user named by a verified client certificate (CN, and O as groups).
pub fn user_of(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = x.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}

/// Paths anyone may read without credentials (kube-apiserver's anonymous defaults).
fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

fn unauthorized() -> axum::response::Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Unauthorized", "reason": "Unauthorized", "code": 401
    });
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Who a bearer token stands for (None: nobody; Err: it could not be checked now).
pub type TokenAuthenticator = Arc<dyn Fn(&str) -> Result<Option<User>, String> + Send + Sync>;

/// Accept TLS connections on `listener` and serve `router` on each, forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cfg: Arc<rustls::ServerConfig>,
) {
    serve_with_tokens(listener, router, cfg, None).await
}

/// The user of a request without a client certificate, from its bearer token.
async fn token_user(
    req: &Request<hyper::body::Incoming>,
    tokens: &Option<TokenAuthenticator>,
) -> Result<Option<User>, axum::response::Response> {
    let (Some(auth), Some(bearer)) = (
        tokens.clone(),
        req.headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string()),
    ) else {
        return Ok(None);
    };
    // Checking may read the store: off the async workers.
    match tokio::task::spawn_blocking(move || auth(&bearer)).await {
        Ok(Ok(Some(u))) => Ok(Some(u)),
        Ok(Ok(None)) => Err(unauthorized()),
        Ok(Err(why)) => Err(unavailable(&why)),
        Err(e) => Err(unavailable(&e.to_string())),
    }
}

fn unavailable(why: &str) -> axum::response::Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the token cannot be checked now: {why}"),
        "reason": "ServiceUnavailable", "code": 503
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// As [`serve`], and a request without a client certificate may authenticate with a
/// bearer token `tokens` accepts (a wrong one is 401, as kube-apiserver answers).
pub async fn serve_with_tokens(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cfg: Arc<rustls::ServerConfig>,
    tokens: Option<TokenAuthenticator>,
) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, router, tokens) = (acceptor.clone(), router.clone(), tokens.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return; // a failed handshake is the client's problem
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(user_of);
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                let mut user = user.clone();
                let tokens = tokens.clone();
                async move {
                    if user.is_none() {
                        match token_user(&req, &tokens).await {
                            Ok(u) => user = u,
                            Err(answer) => return Ok(answer),
                        }
                    }
                    if user.is_none() && !public(req.uri().path()) {
                        return Ok::<_, std::convert::Infallible>(unauthorized());
                    }
                    if let Some(u) = user {
                        req.extensions_mut().insert(u);
                    }
                    router.oneshot(req.map(axum::body::Body::new)).await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
        });
    }
}
