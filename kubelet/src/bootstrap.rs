//! Joining a cluster with a bootstrap token, as kubeadm join and the kubelet's TLS
//! bootstrap do: the API server's CA is taken from its TLS handshake only if its public
//! key has the pin the user was given (`--ca-cert-hash sha256:…`) and it signed the
//! server's certificate; then a key is made here and a certificate for it asked through
//! a CertificateSigningRequest (the token authenticates it), which the control plane
//! approves and signs. The node's client credentials are written as a kubeconfig; its
//! serving certificate is asked for the same way, with those credentials.

use sha2::Digest;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--server {0:?} is not an https://HOST:PORT URL")]
    Server(String),
    #[error("--ca-cert-hash {0:?} is not sha256:<64 hex digits>")]
    Pin(String),
    #[error("cannot reach the API server at {0}: {1}")]
    Unreachable(String, String),
    #[error("the API server's CA does not match --ca-cert-hash {want} (it showed {shown}): refusing to trust it")]
    WrongCa { want: String, shown: String },
    #[error("the API server's certificate is not signed by the pinned CA: {0}")]
    Unsigned(String),
    #[error("the token was refused ({0}): it is wrong, expired or deleted")]
    Refused(u16),
    #[error("the API server answered {0}: {1}")]
    Api(u16, String),
    #[error("certificate request {0} was {1}: {2}")]
    NotIssued(String, String, String),
    #[error("certificate request {0} was not signed within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}")]
    Local(String),
}

type Result<T> = std::result::Result<T, BootstrapError>;

/// The pin of a DER certificate: `sha256:` + hex SHA-256 of its SubjectPublicKeyInfo.
pub fn pin_of(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let d = sha2::Sha256::digest(c.tbs_certificate.subject_pki.raw);
    Some(format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn host_port(server: &str) -> Result<(String, u16)> {
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| BootstrapError::Server(server.into()))?
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| BootstrapError::Server(server.into()))?,
        ),
        _ => (rest, 443),
    };
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Accepts whatever chain the server shows and keeps it: it is judged afterwards,
/// against the pin, before anything is sent.
#[derive(Debug)]
struct Keep(Mutex<Vec<Vec<u8>>>, Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Keep {
    fn verify_server_cert(
        &self,
        end: &rustls::pki_types::CertificateDer<'_>,
        rest: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let mut all = vec![end.to_vec()];
        all.extend(rest.iter().map(|c| c.to_vec()));
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = all;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// The cluster CA (PEM) of the API server at `server`, trusted only if it has `pin` and
/// signed the server's certificate for that host.
pub fn fetch_ca(server: &str, pin: &str) -> Result<String> {
    let want = pin.to_ascii_lowercase();
    let hex = want.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BootstrapError::Pin(pin.into()));
    }
    let (host, port) = host_port(server)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let keep = Arc::new(Keep(Mutex::new(Vec::new()), provider.clone()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BootstrapError::Local(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(keep.clone())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| BootstrapError::Server(server.into()))?;
    let unreachable = |e: String| BootstrapError::Unreachable(server.into(), e);
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name.clone())
        .map_err(|e| unreachable(e.to_string()))?;
    let mut tcp = std::net::TcpStream::connect((host.as_str(), port))
        .map_err(|e| unreachable(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| unreachable(e.to_string()))?;
    }
    let chain = keep.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ca = chain
        .iter()
        .find(|c| pin_of(c).as_deref() == Some(want.as_str()))
        .ok_or_else(|| BootstrapError::WrongCa {
            want: want.clone(),
            shown: chain
                .iter()
                .skip(1)
                .chain(chain.first())
                .filter_map(|c| pin_of(c))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    // The pinned CA must have signed the server's certificate for this host.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.clone()))
        .map_err(|e| BootstrapError::Unsigned(e.to_string()))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| BootstrapError::Unsigned(e.to_string()))?;
    let end = rustls::pki_types::CertificateDer::from(chain[0].clone());
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(&end, &[], &name, &[], rustls::pki_types::UnixTime::now())
        .map_err(|e| BootstrapError::Unsigned(e.to_string()))?;
    Ok(pem(ca))
}

/// How a request to the API authenticates.
pub enum Auth<'a> {
    Token(&'a str),
    Client { cert: &'a str, key: &'a str },
}

fn agent(ca: &str, auth: &Auth) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let local = |e: ureq::Error| BootstrapError::Local(e.to_string());
    let mut tls =
        TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[Certificate::from_pem(
            ca.as_bytes(),
        )
        .map_err(local)?]));
    if let Auth::Client { cert, key } = auth {
        tls = tls.client_cert(Some(ClientCert::new_with_certs(
            &[Certificate::from_pem(cert.as_bytes()).map_err(local)?],
            PrivateKey::from_pem(key.as_bytes()).map_err(local)?,
        )));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into())
}

/// What a certificate is for.
pub struct Wanted<'a> {
    pub node: &'a str,
    pub signer: &'a str,
    pub usages: &'a [&'a str],
    /// DNS names and IPs (a serving certificate's).
    pub names: &'a [String],
}

/// A new key and the certificate the cluster signs for it (PEMs), asked through a
/// CertificateSigningRequest and waited for up to `wait`.
pub fn request_certificate(
    server: &str,
    ca: &str,
    auth: &Auth,
    w: &Wanted,
    wait: Duration,
) -> Result<(String, String)> {
    use base64::Engine;
    let local = |e: String| BootstrapError::Local(e);
    let key = rcgen::KeyPair::generate().map_err(|e| local(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(w.names.to_vec()).map_err(|e| local(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("system:node:{}", w.node));
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name = dn;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| local(e.to_string()))?;
    let name = format!(
        "{}-{}-{}",
        if w.signer.ends_with("serving") {
            "node-serving"
        } else {
            "node-csr"
        },
        w.node,
        // Named after the key, as the kubelet names its requests: a new key, a new name.
        sha2::Sha256::digest(key.public_key_der())
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let name = name.replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
        "-",
    );
    let body = serde_json::json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(&csr_pem),
                 "signerName": w.signer, "usages": w.usages}});
    let a = agent(ca, auth)?;
    let base = server.trim_end_matches('/');
    let call = |method: &str,
                path: &str,
                body: Option<&serde_json::Value>|
     -> Result<(u16, serde_json::Value)> {
        let url = format!("{base}{path}");
        let unreachable =
            |e: ureq::Error| BootstrapError::Unreachable(server.into(), e.to_string());
        let mut resp = match (method, auth) {
            ("POST", Auth::Token(t)) => a
                .post(&url)
                .header("authorization", &format!("Bearer {t}"))
                .header("content-type", "application/json")
                .send(body.map(|b| b.to_string()).unwrap_or_default())
                .map_err(unreachable)?,
            ("POST", _) => a
                .post(&url)
                .header("content-type", "application/json")
                .send(body.map(|b| b.to_string()).unwrap_or_default())
                .map_err(unreachable)?,
            (_, Auth::Token(t)) => a
                .get(&url)
                .header("authorization", &format!("Bearer {t}"))
                .call()
                .map_err(unreachable)?,
            _ => a.get(&url).call().map_err(unreachable)?,
        };
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        match code {
            401 => Err(BootstrapError::Refused(code)),
            c if c >= 300 => Err(BootstrapError::Api(
                c,
                v["message"].as_str().unwrap_or(&text).to_string(),
            )),
            _ => Ok((code, v)),
        }
    };
    call(
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        Some(&body),
    )?;
    let end = Instant::now() + wait;
    let path = format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}");
    loop {
        let (_, v) = call("GET", &path, None)?;
        for c in v["status"]["conditions"].as_array().into_iter().flatten() {
            if matches!(c["type"].as_str(), Some("Denied" | "Failed")) && c["status"] != "False" {
                return Err(BootstrapError::NotIssued(
                    name,
                    c["type"].as_str().unwrap_or("").to_lowercase(),
                    c["message"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        if let Some(cert) = v["status"]["certificate"].as_str() {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(cert)
                .map_err(|e| local(format!("certificate of {name}: {e}")))?;
            let pem = String::from_utf8(pem).map_err(|e| local(e.to_string()))?;
            return Ok((pem, key.serialize_pem()));
        }
        if Instant::now() >= end {
            return Err(BootstrapError::Timeout(name, wait));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A kubeconfig for `server` with the CA and this client certificate embedded.
pub fn kubeconfig(server: &str, ca: &str, cert: &str, key: &str, node: &str) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = format!("system:node:{node}");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         users:\n- name: {user:?}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: {user:?}\ncurrent-context: skiff\n",
        b(ca),
        b(cert),
        b(key)
    )
}

/// Write `text` readable by root only (keys), atomically.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| BootstrapError::Local(format!("write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The names a node's serving certificate carries: its name and address.
pub fn serving_names(node: &str, ip: IpAddr) -> Vec<String> {
    vec![node.to_string(), ip.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_pins_are_checked_before_use() {
        assert_eq!(
            host_port("https://10.0.0.1:6443").unwrap(),
            ("10.0.0.1".into(), 6443)
        );
        assert_eq!(
            host_port("https://cp.example/").unwrap(),
            ("cp.example".into(), 443)
        );
        assert_eq!(
            host_port("https://[fd00::1]:6443").unwrap(),
            ("fd00::1".into(), 6443)
        );
        assert!(matches!(
            host_port("http://10.0.0.1:6443"),
            Err(BootstrapError::Server(_))
        ));
        assert!(matches!(
            fetch_ca("https://127.0.0.1:1", "sha256:abc"),
            Err(BootstrapError::Pin(_))
        ));
        assert!(matches!(
            fetch_ca("https://127.0.0.1:1", &format!("sha256:{}", "0".repeat(64))),
            Err(BootstrapError::Unreachable(..))
        ));
    }
}
