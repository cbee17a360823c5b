//! Errors as metav1.Status bodies, which kubectl prints as they are.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// metav1.StatusDetails: the object's name, group and kind (clients rely on it:
    /// kubectl debug reads details.kind).
    pub details: Option<serde_json::Value>,
}

/// Details naming an object of a resource like "pods" or "deployments.apps".
fn details_of(what: &str, name: &str) -> serde_json::Value {
    let (kind, group) = what.split_once('.').unwrap_or((what, ""));
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn not_found(what: &str, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} \"{name}\" not found"),
        )
        .about(what, name)
    }

    /// Name the object the error is about (`what`: "pods", "deployments.apps").
    pub fn about(mut self, what: &str, name: &str) -> ApiError {
        self.details = Some(details_of(what, name));
        self
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", m)
    }
    /// The object changed while we acted on it; the client may retry.
    pub fn conflict_retry(r: &super::resources::Resource, name: &str) -> ApiError {
        let what = r.qualified();
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            ),
        )
        .about(&what, name)
    }
    pub fn invalid(kind: &str, name: &str, m: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {m}"),
        );
        // "field: message" causes, as kube lists each failed field.
        let (field, message) = m.split_once(": ").unwrap_or(("", m));
        e.details = Some(json!({"name": name, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}));
        e
    }
}

impl ApiError {
    /// The metav1.Status body.
    pub fn status(&self) -> serde_json::Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code.as_u16()});
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.status();
        (
            self.code,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
