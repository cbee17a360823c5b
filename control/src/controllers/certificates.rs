//! CertificateSigningRequests: approved, then signed — kube's csrapproving and
//! csrsigning controllers, for the requests a node makes.
//!
//! Approved on their own ("AutoApproved"), as kube approves a kubelet's:
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a node's client certificate, asked
//!   by a bootstrap token (group system:bootstrappers) or by that node itself, for
//!   subject `CN=system:node:NAME, O=system:nodes`, no names, usages within digital
//!   signature, key encipherment and client auth;
//! - `kubernetes.io/kubelet-serving`: a node's serving certificate, asked by that node
//!   (`system:node:NAME`) for the same subject, DNS names and IPs only, usages within
//!   digital signature, key encipherment and server auth. (kube leaves these to an
//!   outside approver; a Skiff node gets its serving certificate the same way as its
//!   client one.)
//!
//! Anything else waits for `kubectl certificate approve`. Approved requests of the
//! kubernetes.io signers (the two above and `kube-apiserver-client`) are signed with the
//! cluster CA for `spec.expirationSeconds` (default one year) with the usages asked for.

use super::controller::Reconciler;
use super::reflector::{Kind, Reflector};
use super::*;
use crate::apiserver::kinds::csr::{condition, request_pem};
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use std::sync::Arc;

const CSRS: &str = "/registry/certificates.k8s.io/certificatesigningrequests/";
const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING: &str = "kubernetes.io/kubelet-serving";
const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const ONE_YEAR: i64 = 365 * 24 * 3600;

pub(crate) struct Controller {
    pub signer: Option<Arc<crate::pki::Pki>>,
}

/// What a request asks for, read from its PEM.
struct Asked {
    cn: String,
    orgs: Vec<String>,
    /// DNS names and IP addresses (other name kinds make it `odd_names`).
    names: usize,
    odd_names: bool,
}

fn asked(pem: &str) -> Option<Asked> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, req) = X509CertificationRequest::from_der(&p.contents).ok()?;
    let info = &req.certification_request_info;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let orgs = info
        .subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let (mut names, mut odd_names) = (0, false);
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(_) | GeneralName::IPAddress(_) => names += 1,
                    _ => odd_names = true,
                }
            }
        }
    }
    Some(Asked {
        cn,
        orgs,
        names,
        odd_names,
    })
}

fn usages(v: &Value) -> Vec<String> {
    v["spec"]["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect()
}

/// Why a request is approved on its own, or None (it waits for a person).
fn auto_approval(v: &Value) -> Option<&'static str> {
    let signer = v["spec"]["signerName"].as_str()?;
    let requester = v["spec"]["username"].as_str().unwrap_or("");
    let groups: Vec<&str> = v["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let a = asked(&request_pem(v)?)?;
    let node =
        a.cn.strip_prefix("system:node:")
            .filter(|n| !n.is_empty())?;
    if a.orgs != ["system:nodes"] || a.odd_names {
        return None;
    }
    let within = |allowed: &[&str]| usages(v).iter().all(|u| allowed.contains(&u.as_str()));
    let by_the_node = requester == a.cn;
    match signer {
        CLIENT_KUBELET
            if a.names == 0
                && within(&["digital signature", "key encipherment", "client auth"])
                && usages(v).iter().any(|u| u == "client auth")
                && (groups.contains(&crate::apiserver::authn::GROUP) || by_the_node) =>
        {
            Some("Auto approving a node's client certificate (bootstrap token or the node itself)")
        }
        SERVING
            if by_the_node
                && !node.is_empty()
                && within(&["digital signature", "key encipherment", "server auth"])
                && usages(v).iter().any(|u| u == "server auth") =>
        {
            Some("Auto approving a node's serving certificate asked by that node")
        }
        _ => None,
    }
}

fn key_usages(v: &Value) -> (Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>) {
    let (mut k, mut e) = (Vec::new(), Vec::new());
    for u in usages(v) {
        match u.as_str() {
            "digital signature" => k.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => k.push(KeyUsagePurpose::KeyEncipherment),
            "client auth" => e.push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => e.push(ExtendedKeyUsagePurpose::ServerAuth),
            _ => {}
        }
    }
    (k, e)
}

impl Reconciler for Controller {
    fn name(&self) -> &'static str {
        "certificates"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::whole(CSRS)]
    }

    fn reconcile(
        &mut self,
        store: &Store,
        cache: &Reflector,
        key: &str,
    ) -> Result<Action, StoreError> {
        let Some(csr) = cache.get(key).cloned() else {
            return Ok(Action::AwaitChange);
        };
        let name = csr["metadata"]["name"].as_str().unwrap_or("").to_string();
        let decided = ["Approved", "Denied", "Failed"]
            .iter()
            .any(|t| condition(&csr, t));
        if !decided {
            if let Some(why) = auto_approval(&csr) {
                tracing::info!(csr = %name, requester = %csr["spec"]["username"], "approved");
                let now = now_rfc3339();
                let mut conds = csr["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conds.push(
                    json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                    "message": why, "lastUpdateTime": now, "lastTransitionTime": now}),
                );
                approve(store, key, &json!(conds))?;
            }
            return Ok(Action::AwaitChange);
        }
        let signable = condition(&csr, "Approved")
            && !condition(&csr, "Denied")
            && !condition(&csr, "Failed")
            && csr["status"]["certificate"].is_null()
            && matches!(
                csr["spec"]["signerName"].as_str(),
                Some(CLIENT_KUBELET | SERVING | CLIENT)
            );
        let Some(pki) = self.signer.as_ref().filter(|_| signable) else {
            return Ok(Action::AwaitChange);
        };
        let seconds = csr["spec"]["expirationSeconds"]
            .as_i64()
            .unwrap_or(ONE_YEAR)
            .clamp(600, ONE_YEAR);
        let (k, e) = key_usages(&csr);
        let mut next = csr.clone();
        match request_pem(&csr).map(|pem| pki.sign_csr(&pem, &k, &e, seconds)) {
            Some(Ok(cert)) => {
                use base64::Engine;
                next["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(cert));
                tracing::info!(csr = %name, signer = %csr["spec"]["signerName"], seconds, "signed");
            }
            failed => {
                // The request cannot be signed (kube's signer marks it Failed).
                let why = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => "the request is not a PEM certificate request".into(),
                };
                tracing::warn!(csr = %name, error = %why, "cannot sign");
                let now = now_rfc3339();
                let mut conds = csr["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conds.push(
                    json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                    "message": why, "lastUpdateTime": now, "lastTransitionTime": now}),
                );
                next["status"]["conditions"] = json!(conds);
            }
        }
        update_status(store, key, &next)?;
        Ok(Action::AwaitChange)
    }
}
