//! certificates.k8s.io/v1 CertificateSigningRequest: a request to have a key's
//! certificate signed by one of the cluster's signers. As kube's strategy: the server
//! records who asked (spec.username, uid, groups — never the client's say), the spec
//! cannot change after create, the request must be a PEM CSR whose signature holds,
//! and approval (`…/approval`) and the certificate (`…/status`) are written apart.

use super::super::table::{age, c, str_of, Col};
use super::{invalid, typed_as, Strategy};
use crate::apiserver::status::ApiError;
use crate::apiserver::tls::User;
use serde_json::{json, Value};
use std::time::SystemTime;

pub struct CertificateSigningRequest;

/// The PEM a CSR's spec.request carries (base64 of it in JSON).
pub fn request_pem(v: &Value) -> Option<String> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD
        .decode(v["spec"]["request"].as_str()?)
        .ok()?;
    String::from_utf8(b).ok()
}

/// The condition of this type that is True, if any (Approved, Denied, Failed).
pub fn condition(v: &Value, typ: &str) -> bool {
    v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == typ && c["status"] != "False")
}

impl Strategy for CertificateSigningRequest {
    typed_as!(k8s_openapi::api::certificates::v1::CertificateSigningRequest);

    fn has_status(&self) -> bool {
        true
    }

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::CERTIFICATE_SIGNING_REQUEST)
    }

    fn record_requester(&self, v: &mut Value, user: &User) {
        v["spec"]["username"] = json!(user.name);
        let mut groups = user.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        v["spec"]["groups"] = json!(groups);
        if let Some(m) = v["spec"].as_object_mut() {
            m.remove("uid");
            m.remove("extra");
        }
    }

    fn prepare_for_create(&self, v: &mut Value) {
        // A new request has no verdict and no certificate yet.
        v["status"] = json!({});
    }

    fn validate(&self, v: &Value) -> Result<(), ApiError> {
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        let kind = "CertificateSigningRequest";
        let signer = v["spec"]["signerName"].as_str().unwrap_or("");
        if signer.is_empty() || !signer.contains('/') {
            return Err(invalid(
                kind,
                name,
                "spec.signerName",
                &v["spec"]["signerName"],
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            ));
        }
        let Some(pem) = request_pem(v) else {
            return Err(invalid(
                kind,
                name,
                "spec.request",
                &json!("…"),
                "must be a base64-encoded PEM",
            ));
        };
        if let Err(e) = rcgen::CertificateSigningRequestParams::from_pem(&pem) {
            return Err(invalid(
                kind,
                name,
                "spec.request",
                &json!("…"),
                &format!("invalid certificate request: {e}"),
            ));
        }
        if v["spec"]["expirationSeconds"]
            .as_i64()
            .is_some_and(|s| s < 600)
        {
            return Err(invalid(
                kind,
                name,
                "spec.expirationSeconds",
                &v["spec"]["expirationSeconds"],
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
        Ok(())
    }

    fn immutable(&self, cur: &Value, next: &Value) -> Result<(), ApiError> {
        if cur["spec"] != next["spec"] {
            let name = cur["metadata"]["name"].as_str().unwrap_or("");
            return Err(invalid(
                "CertificateSigningRequest",
                name,
                "spec",
                &json!("…"),
                "field is immutable",
            ));
        }
        Ok(())
    }

    fn columns(&self, o: &Value, now: SystemTime) -> Vec<Col> {
        let mut conds: Vec<String> = ["Approved", "Denied", "Failed"]
            .iter()
            .filter(|t| condition(o, t))
            .map(|t| t.to_string())
            .collect();
        if o["status"]["certificate"].is_string() {
            conds.push("Issued".into());
        }
        let cond = if conds.is_empty() {
            "Pending".to_string()
        } else {
            conds.join(",")
        };
        let duration = o["spec"]["expirationSeconds"]
            .as_i64()
            .map(|s| super::super::table::human_duration(s as u64))
            .unwrap_or_else(|| "<none>".into());
        vec![
            c("Name", o["metadata"]["name"].clone()),
            c("Age", age(o, now)),
            c("SignerName", str_of(&o["spec"]["signerName"])),
            c("Requestor", str_of(&o["spec"]["username"])),
            c("RequestedDuration", duration),
            c("Condition", cond),
        ]
    }
}
