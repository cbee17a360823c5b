//! The cluster's certificates, made on first start under `<data-dir>/pki`: a CA, the API
//! server's serving certificate (names and addresses clients use), and an admin client
//! certificate (O=system:masters) for `skiff-control kubeconfig`. Keys are 0600 files.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

type Result<T> = std::result::Result<T, PkiError>;

/// PEM files of the cluster PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// The API server's client certificate towards kubelets (logs, exec).
    pub kubelet_client_cert: String,
    pub kubelet_client_key: String,
}

fn years_from_now(n: i32) -> time::OffsetDateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    rcgen::date_time_ymd(year + n, 1, 1)
}

fn write_private(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| PkiError::Io(format!("write {}", tmp.display()), e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| PkiError::Io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| PkiError::Io(format!("write {}", path.display()), e))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Io(format!("read {}", path.display()), e))
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    if let Some(o) = org {
        d.push(DnType::OrganizationName, o);
    }
    d
}

/// kubeadm's CA pin of a PEM certificate: `sha256:` + hex SHA-256 of its
/// SubjectPublicKeyInfo.
pub fn ca_hash_of(ca_pem: &str) -> Result<String> {
    use sha2::Digest;
    let bad = |why: String| PkiError::Io(why, std::io::Error::other("bad CA certificate"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| bad(format!("CA PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
        .map_err(|e| bad(format!("CA certificate: {e}")))?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

fn rand_serial() -> [u8; 16] {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[0] &= 0x7f; // positive
    b
}

impl Pki {
    /// Load the PKI from `dir`, creating what is missing. `sans` are the names and
    /// addresses of the serving certificate (made once; delete it to re-issue).
    pub fn ensure(dir: &Path, sans: &[String]) -> Result<Pki> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PkiError::Io(format!("create {}", dir.display()), e))?;
        let p = |n: &str| dir.join(n);
        if !p("ca.crt").exists() || !p("ca.key").exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = dn("skiff-ca", None);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = years_from_now(-1);
            params.not_after = years_from_now(10);
            let cert = params.self_signed(&key)?;
            // Key first: a crash in between leaves no CA certificate without its key.
            write_private(&p("ca.key"), &key.serialize_pem(), 0o600)?;
            write_private(&p("ca.crt"), &cert.pem(), 0o644)?;
            for f in [
                "apiserver.crt",
                "apiserver.key",
                "admin.crt",
                "admin.key",
                "kubelet-client.crt",
                "kubelet-client.key",
            ] {
                let _ = std::fs::remove_file(p(f));
            }
        }
        let ca_key = KeyPair::from_pem(&read(&p("ca.key"))?)?;
        let ca_pem = read(&p("ca.crt"))?;
        let ca = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
        let issue =
            |name: &str, cn: &str, org: Option<&str>, sans: &[String], usage| -> Result<()> {
                if p(&format!("{name}.crt")).exists() && p(&format!("{name}.key")).exists() {
                    return Ok(());
                }
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(sans.to_vec())?;
                params.distinguished_name = dn(cn, org);
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![usage];
                params.not_before = years_from_now(-1);
                params.not_after = years_from_now(2);
                let cert = params.signed_by(&key, &ca, &ca_key)?;
                write_private(&p(&format!("{name}.key")), &key.serialize_pem(), 0o600)?;
                write_private(&p(&format!("{name}.crt")), &cert.pem(), 0o644)
            };
        let mut names: Vec<String> = [
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for s in sans {
            if !names.contains(s) {
                names.push(s.clone());
            }
        }
        issue(
            "apiserver",
            "kube-apiserver",
            None,
            &names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        issue(
            "admin",
            "skiff-admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        issue(
            "kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_cert: ca_pem,
            server_cert: read(&p("apiserver.crt"))?,
            server_key: read(&p("apiserver.key"))?,
            admin_cert: read(&p("admin.crt"))?,
            admin_key: read(&p("admin.key"))?,
            kubelet_client_cert: read(&p("kubelet-client.crt"))?,
            kubelet_client_key: read(&p("kubelet-client.key"))?,
        })
    }

    /// A kubelet serving certificate (and key) for `node`, valid for its name and
    /// addresses, signed by the cluster CA: what the API server checks when it proxies
    /// logs, exec and port-forward to the node.
    pub fn issue_kubelet_serving(&self, node: &str, sans: &[String]) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)?;
        let ca = CertificateParams::from_ca_cert_pem(&self.ca_cert)?.self_signed(&ca_key)?;
        let mut names = vec![node.to_string()];
        names.extend(sans.iter().filter(|s| s.as_str() != node).cloned());
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = dn(&format!("system:node:{node}"), Some("system:nodes"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = years_from_now(-1);
        params.not_after = years_from_now(2);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// An admin kubeconfig for `server` (https://host:port), certificates embedded.
    pub fn kubeconfig(&self, server: &str) -> String {
        self.kubeconfig_with(server, "skiff-admin", &self.admin_cert, &self.admin_key)
    }

    /// A client certificate (and key) for `user` in `groups` (CN and O entries, as
    /// kube-apiserver reads them), signed by the cluster CA. What the user may do is
    /// up to RBAC (and the Node authorizer for `system:node:NAME` in system:nodes).
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)?;
        let ca = CertificateParams::from_ca_cert_pem(&self.ca_cert)?.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, user);
        for g in groups {
            name.push(DnType::OrganizationName, g.as_str());
        }
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = years_from_now(-1);
        params.not_after = years_from_now(1);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Certificates for an etcd member named `name` at `sans` (names and addresses), as
    /// kubeadm's etcd phase makes them from the cluster CA: its client-facing serving
    /// pair and its peer pair (both server and client auth: members dial each other),
    /// and the API server's client pair for etcd (`kube-apiserver-etcd-client`). Each
    /// pair is (certificate, key) PEM.
    pub fn issue_etcd(&self, name: &str, sans: &[String]) -> Result<[(String, String); 3]> {
        let ca_key = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)?;
        let ca = CertificateParams::from_ca_cert_pem(&self.ca_cert)?.self_signed(&ca_key)?;
        let mut names = vec![name.to_string(), "localhost".into(), "127.0.0.1".into()];
        names.extend(
            sans.iter()
                .filter(|s| !names.contains(s))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let pair = |cn: &str,
                    names: Vec<String>,
                    eku: Vec<ExtendedKeyUsagePurpose>|
         -> Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name = dn(cn, None);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = eku;
            params.not_before = years_from_now(-1);
            params.not_after = years_from_now(2);
            Ok((
                params.signed_by(&key, &ca, &ca_key)?.pem(),
                key.serialize_pem(),
            ))
        };
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        Ok([
            pair(name, names.clone(), vec![ServerAuth, ClientAuth])?,
            pair(name, names, vec![ServerAuth, ClientAuth])?,
            pair("kube-apiserver-etcd-client", Vec::new(), vec![ClientAuth])?,
        ])
    }

    /// The CA's pin as kubeadm prints it (`sha256:` and the hex SHA-256 of its
    /// SubjectPublicKeyInfo): what a joining node checks the CA it is shown against.
    pub fn ca_hash(&self) -> Result<String> {
        ca_hash_of(&self.ca_cert)
    }

    /// Sign a certificate signing request (PEM, its signature checked) with the CA, for
    /// `seconds` from now, with the key usages and extended usages asked for: the
    /// subject and names are the request's own; it is never a CA.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        usages: &[KeyUsagePurpose],
        extended: &[ExtendedKeyUsagePurpose],
        seconds: i64,
    ) -> Result<String> {
        let ca_key = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)?;
        let ca = CertificateParams::from_ca_cert_pem(&self.ca_cert)?.self_signed(&ca_key)?;
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = time::OffsetDateTime::now_utc();
        // A little back, for clocks behind ours (kube's signer backdates 5 minutes).
        csr.params.not_before = now - time::Duration::minutes(5);
        csr.params.not_after = now + time::Duration::seconds(seconds);
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = usages.to_vec();
        csr.params.extended_key_usages = extended.to_vec();
        csr.params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
        Ok(csr.signed_by(&ca, &ca_key)?.pem())
    }

    /// A kubeconfig for `server` with this client certificate embedded.
    pub fn kubeconfig_with(&self, server: &str, user: &str, cert: &str, key: &str) -> String {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
             users:\n- name: {user:?}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
             contexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: {user:?}\ncurrent-context: skiff\n",
            b(&self.ca_cert),
            b(cert),
            b(key)
        )
    }
}
