//! Who am I and what may I do: SelfSubjectReview (`kubectl auth whoami`) and
//! SelfSubjectAccessReview (`kubectl auth can-i`), answered for the client that asks.
//!
//! This server authenticates (client certificates) but does not authorize yet: every
//! authenticated client may do everything, and can-i says so, with that reason, rather
//! than pretending to check a role.

use super::status::ApiError;
use super::tls::User;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

/// The user of the loopback insecure port (no certificate): kube-apiserver's old
/// insecure port named it so, with full rights.
fn unsecured() -> User {
    User {
        name: "system:unsecured".into(),
        groups: vec!["system:masters".into()],
    }
}

fn groups(u: &User) -> Vec<String> {
    let mut g = u.groups.clone();
    if !g.iter().any(|x| x == "system:authenticated") {
        g.push("system:authenticated".into());
    }
    g
}

/// The answer to a review request, or None for any other path.
pub fn answer(
    segs: &[&str],
    who: Option<&User>,
    body: &[u8],
) -> Result<Option<Response>, ApiError> {
    let user = who.cloned().unwrap_or_else(unsecured);
    let review = match segs {
        ["apis", "authentication.k8s.io", v @ ("v1" | "v1beta1"), "selfsubjectreviews"] => json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("authentication.k8s.io/{v}"),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": groups(&user)}},
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
            json!({
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": req["spec"],
                "status": {
                    "allowed": true,
                    "reason": format!("skiff-control authorizes every authenticated client (user {:?}); RBAC is not enforced yet", user.name),
                },
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(super::json_response(StatusCode::CREATED, &review)))
}
