//! `skiff-control token create|list|delete`: bootstrap tokens for joining nodes, as
//! `kubeadm token` keeps them — a Secret `kube-system/bootstrap-token-ID` of type
//! `bootstrap.kubernetes.io/token`, written through the API with the admin's
//! credentials. A node joins with the token and the CA's pin ([`crate::pki::ca_hash_of`]).

use crate::apiserver::authn::SECRET_TYPE;
use crate::pki::Pki;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("API server at {0}: {1}")]
    Api(String, String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("{0}")]
    Invalid(String),
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A new token `ID.SECRET` from the system's random source.
pub fn generate() -> Result<(String, String), TokenError> {
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| TokenError::Invalid(format!("random source: {e}")))?;
    let mut bytes = Vec::with_capacity(22);
    while bytes.len() < 22 {
        let mut b = [0u8; 32];
        std::io::Read::read_exact(&mut f, &mut b)
            .map_err(|e| TokenError::Invalid(format!("random source: {e}")))?;
        bytes.extend(b.iter().copied().filter(|x| *x < 252));
    }
    bytes.truncate(22);
    // Bytes at or above 252 (7 × 36) would favour the first four characters a little;
    // drawn again instead.
    let s: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    Ok((s[..6].to_string(), s[6..].to_string()))
}

/// `ID.SECRET` split, if it has the bootstrap token form (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn parse(token: &str) -> Result<(String, String), TokenError> {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    match token.split_once('.') {
        Some((id, sec)) if ok(id, 6) && ok(sec, 16) => Ok((id.to_string(), sec.to_string())),
        _ => Err(TokenError::Invalid(format!(
            "{token:?} is not a bootstrap token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}"
        ))),
    }
}

/// The Secret that holds a token valid for `ttl` (None: no expiry).
pub fn secret(id: &str, secret: &str, ttl: Option<Duration>, description: &str) -> Value {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = json!({
        "token-id": b(id), "token-secret": b(secret),
        "usage-bootstrap-authentication": b("true"), "usage-bootstrap-signing": b("true"),
        "auth-extra-groups": b("system:bootstrappers:kubeadm:default-node-token"),
    });
    if let Some(ttl) = ttl {
        let at = std::time::SystemTime::now() + ttl;
        data["expiration"] = json!(b(&humantime::format_rfc3339_seconds(at).to_string()));
    }
    if !description.is_empty() {
        data["description"] = json!(b(description));
    }
    json!({"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "data": data})
}

/// An HTTPS client of the API server with the admin's certificate.
pub struct Admin {
    agent: ureq::Agent,
    server: String,
}

impl Admin {
    pub fn new(pki: &Pki, server: &str) -> Result<Admin, TokenError> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let bad = |e: ureq::Error| TokenError::Credentials(e.to_string());
        let ca = Certificate::from_pem(pki.ca_cert.as_bytes()).map_err(bad)?;
        let cert = Certificate::from_pem(pki.admin_cert.as_bytes()).map_err(bad)?;
        let key = PrivateKey::from_pem(pki.admin_key.as_bytes()).map_err(bad)?;
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Admin {
            agent,
            server: server.trim_end_matches('/').to_string(),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), TokenError> {
        let url = format!("{}{path}", self.server);
        let err = |e: ureq::Error| TokenError::Api(self.server.clone(), e.to_string());
        let mut resp = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b.to_string())
                .map_err(err)?,
            ("DELETE", _) => self.agent.delete(&url).call().map_err(err)?,
            _ => self.agent.get(&url).call().map_err(err)?,
        };
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((code, v))
    }

    fn ok(&self, (code, v): (u16, Value)) -> Result<Value, TokenError> {
        if (200..300).contains(&code) {
            Ok(v)
        } else {
            let msg = v["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {code}"), str::to_string);
            Err(TokenError::Api(self.server.clone(), msg))
        }
    }

    /// Make a token (`given`, or a random one); `ID.SECRET`.
    pub fn create(
        &self,
        given: Option<&str>,
        ttl: Option<Duration>,
        description: &str,
    ) -> Result<String, TokenError> {
        let (id, sec) = match given {
            Some(t) => parse(t)?,
            None => generate()?,
        };
        let s = secret(&id, &sec, ttl, description);
        self.ok(self.call("POST", "/api/v1/namespaces/kube-system/secrets", Some(&s))?)?;
        Ok(format!("{id}.{sec}"))
    }

    /// Every bootstrap token: (ID, expiration or "<forever>", description).
    pub fn list(&self) -> Result<Vec<(String, String, String)>, TokenError> {
        let v = self.ok(self.call("GET", "/api/v1/namespaces/kube-system/secrets", None)?)?;
        let field = |s: &Value, k: &str| {
            use base64::Engine;
            s["data"][k]
                .as_str()
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == SECRET_TYPE)
            .map(|s| {
                (
                    field(s, "token-id").unwrap_or_default(),
                    field(s, "expiration").unwrap_or_else(|| "<forever>".into()),
                    field(s, "description").unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Remove a token (by `ID` or `ID.SECRET`).
    pub fn delete(&self, token: &str) -> Result<(), TokenError> {
        let id = token.split('.').next().unwrap_or("");
        if id.len() != 6 || !id.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(TokenError::Invalid(format!(
                "{token:?} is not a token ID ([a-z0-9]{{6}}) or a token"
            )));
        }
        let path = format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}");
        self.ok(self.call("DELETE", &path, None)?).map(|_| ())
    }
}
