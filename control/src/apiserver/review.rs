//! Who am I and what may I do: SelfSubjectReview (`kubectl auth whoami`) and
//! SelfSubjectAccessReview (`kubectl auth can-i`), answered for the client that asks by
//! the same authorizer that judges its requests ([`super::authz`]).

use super::authz::{self, groups, Attributes};
use super::status::ApiError;
use super::tls::User;
use crate::store::Store;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

/// The user of the loopback insecure port (no certificate): kube-apiserver's old
/// insecure port named it so, with full rights.
pub(super) fn unsecured() -> User {
    User {
        name: "system:unsecured".into(),
        groups: vec!["system:masters".into()],
    }
}

/// The answer to a review request, or None for any other path.
pub fn answer(
    store: &Store,
    segs: &[&str],
    user: &User,
    body: &[u8],
) -> Result<Option<Response>, ApiError> {
    let review = match segs {
        ["apis", "authentication.k8s.io", v @ ("v1" | "v1beta1"), "selfsubjectreviews"] => json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("authentication.k8s.io/{v}"),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": groups(user)}},
        }),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => {
            // kubectl 1.33 sends it in protobuf, older ones in JSON.
            let req: Value = if body.starts_with(b"k8s\0") {
                super::protobuf::decode(body)
                    .map_err(|e| ApiError::bad_request(format!("SelfSubjectAccessReview: {e}")))?
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("SelfSubjectAccessReview: {e}")))?
            };
            if !req["spec"].is_object() {
                return Err(ApiError::bad_request(
                    "SelfSubjectAccessReview: spec is required",
                ));
            }
            let attrs = asked(&req["spec"]);
            let d = authz::authorize(store, user, &attrs).map_err(authz::store_failure)?;
            let mut status = json!({"allowed": d.allowed});
            if !d.reason.is_empty() {
                status["reason"] = json!(d.reason);
            }
            json!({
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": req["spec"],
                "status": status,
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(super::json_response(StatusCode::CREATED, &review)))
}

/// The request a SelfSubjectAccessReview asks about.
fn asked(spec: &Value) -> Attributes {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    if let Some(n) = spec["nonResourceAttributes"].as_object() {
        return Attributes {
            verb: n.get("verb").map(s).unwrap_or_default(),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: Some(n.get("path").map(s).unwrap_or_default()),
        };
    }
    let r = &spec["resourceAttributes"];
    Attributes {
        verb: s(&r["verb"]),
        group: s(&r["group"]),
        resource: s(&r["resource"]),
        subresource: s(&r["subresource"]),
        namespace: s(&r["namespace"]),
        name: s(&r["name"]),
        path: None,
    }
}
