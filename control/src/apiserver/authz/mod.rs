//! Authorization, chained as kube-apiserver's `--authorization-mode=Node,RBAC`: members
//! of system:masters may do anything; a node's credentials (user `system:node:NAME` in
//! group system:nodes) what the Node authorizer allows ([`node`]); every user what the
//! RBAC roles bound to them grant ([`rbac`], with the bootstrap roles of [`bootstrap`]).
//! A denied request is 403 Forbidden with Kubernetes' wording.

pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod rbac;

use super::status::ApiError;
use super::tls::User;
use crate::store::{Store, StoreError};
use axum::http::{Method, StatusCode};
use serde_json::json;

/// What a request asks to do, as Kubernetes' RequestInfo names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// A non-resource request (/version, /api, /openapi/v3…): its path.
    pub path: Option<String>,
}

/// Allowed or not, and why (the reason ends a Forbidden message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    pub fn allow(reason: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            reason: reason.into(),
        }
    }

    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            reason: reason.into(),
        }
    }
}

/// Namespace subresources: `namespaces/NAME/status` is the namespace's status, not a
/// resource "status" inside it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// Kubernetes' RequestInfo: resource requests are /api/V/... and /apis/G/V/...
    /// with at least a resource; everything else is a non-resource path.
    pub fn of(method: &Method, path: &str, watch: bool) -> Attributes {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _, rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", g, _, rest @ ..] if !rest.is_empty() => (*g, rest),
            _ => {
                let verb = match *method {
                    Method::GET | Method::HEAD => "get",
                    Method::POST => "post",
                    Method::PUT => "put",
                    Method::PATCH => "patch",
                    Method::DELETE => "delete",
                    _ => "options",
                };
                return Attributes {
                    verb: verb.into(),
                    group: String::new(),
                    resource: String::new(),
                    subresource: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                    path: Some(format!("/{}", segs.join("/"))),
                };
            }
        };
        let mut rest: &[&str] = rest;
        // The legacy /api/v1/watch/... form.
        let watch = watch || rest[0] == "watch" && rest.len() > 1;
        if rest[0] == "watch" && rest.len() > 1 {
            rest = &rest[1..];
        }
        let mut namespace = "";
        if rest[0] == "namespaces" && rest.len() > 1 {
            namespace = rest[1];
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let resource = rest.first().copied().unwrap_or("");
        let name = rest.get(1).copied().unwrap_or("");
        let subresource = rest.get(2).copied().unwrap_or("");
        let verb = match *method {
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD if name.is_empty() => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_empty() => "deletecollection",
            Method::DELETE => "delete",
            _ => "",
        };
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            path: None,
        }
    }

    /// `pods` or `pods/log`.
    pub fn combined(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

pub const MASTERS: &str = "system:masters";

/// The groups a request is judged with: the certificate's, and system:authenticated.
pub fn groups(u: &User) -> Vec<String> {
    let mut g = u.groups.clone();
    if !g.iter().any(|x| x == "system:authenticated") {
        g.push("system:authenticated".into());
    }
    g
}

pub fn authorize(store: &Store, user: &User, a: &Attributes) -> Result<Decision, StoreError> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(Decision::allow("member of system:masters"));
    }
    let by_node = node::authorize(store, user, a)?;
    if let Some(d) = by_node.as_ref().filter(|d| d.allowed) {
        return Ok(d.clone());
    }
    let d = rbac::authorize(store, user, a)?;
    Ok(match by_node {
        // RBAC said no: the node authorizer's reason is the useful one.
        Some(n) if !d.allowed => n,
        _ => d,
    })
}

/// A store that cannot answer who may do what: the request fails as the store's
/// failure (503/504), never as allowed or forbidden.
pub fn store_failure(e: StoreError) -> ApiError {
    let r = super::resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .expect("clusterrolebindings are served");
    super::objects::store_err(r, "", e)
}

/// Kubernetes' Forbidden Status for a denied request.
pub fn forbidden(user: &User, a: &Attributes, reason: &str) -> ApiError {
    let tail = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    let message = match &a.path {
        Some(p) => format!(
            "forbidden: User \"{}\" cannot {} path \"{p}\"{tail}",
            user.name, a.verb
        ),
        None => {
            let subject = if a.name.is_empty() {
                a.resource.clone()
            } else {
                format!("{} \"{}\"", a.combined(), a.name)
            };
            let scope = if a.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", a.namespace)
            };
            format!(
                "{subject} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}{tail}",
                user.name,
                a.verb,
                a.combined(),
                a.group
            )
        }
    };
    let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
    e.details = Some(json!({"name": a.name, "group": a.group, "kind": a.resource}));
    e
}

#[cfg(test)]
mod tests;
