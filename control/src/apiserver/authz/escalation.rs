//! RBAC's escalation prevention: a user may write a Role or ClusterRole only with rules
//! they hold themselves (or the `escalate` verb on roles), and bind a role only when they
//! hold its rules (or the `bind` verb on it), so the right to write RBAC objects is not
//! a way to more rights. Checked on the object as sent (create, update); a patch of an
//! RBAC object needs `escalate` or `bind` outright, as its result is not seen here.

use super::{authorize, Attributes, Decision, MASTERS};
use crate::apiserver::objects::decode;
use crate::apiserver::tls::User;
use crate::store::{Store, StoreError};
use serde_json::Value;

const GROUP: &str = "rbac.authorization.k8s.io";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// Whether `user` holds every permission `rules` grant, in `namespace` ("" for the
/// whole cluster). A wildcard in a rule is held only by a wildcard.
fn holds(
    store: &Store,
    user: &User,
    namespace: &str,
    rules: &[Value],
) -> Result<Option<String>, StoreError> {
    for rule in rules {
        let verbs = strings(&rule["verbs"]);
        let urls = strings(&rule["nonResourceURLs"]);
        for verb in &verbs {
            for url in &urls {
                let a = Attributes {
                    verb: verb.clone(),
                    group: String::new(),
                    resource: String::new(),
                    subresource: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                    path: Some(url.clone()),
                };
                if !authorize(store, user, &a)?.allowed {
                    return Ok(Some(format!("{verb} on path {url}")));
                }
            }
            let names = strings(&rule["resourceNames"]);
            let names = if names.is_empty() {
                vec![String::new()]
            } else {
                names
            };
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_string(), s.to_string()),
                        None => (resource.clone(), String::new()),
                    };
                    for name in &names {
                        let a = Attributes {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            subresource: subresource.clone(),
                            namespace: namespace.to_string(),
                            name: name.clone(),
                            path: None,
                        };
                        if !authorize(store, user, &a)?.allowed {
                            let what = a.combined();
                            return Ok(Some(format!("{verb} on {what} in API group \"{group}\"")));
                        }
                    }
                }
            }
        }
    }
    Ok(None)
}

fn may(
    store: &Store,
    user: &User,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, StoreError> {
    let a = Attributes {
        verb: verb.into(),
        group: GROUP.into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
        path: None,
    };
    Ok(authorize(store, user, &a)?.allowed)
}

/// The check for a write of an RBAC object (already authorized as a write). Ok(Deny)
/// names the permission the user lacks.
pub fn check(
    store: &Store,
    user: &User,
    a: &Attributes,
    body: &[u8],
) -> Result<Decision, StoreError> {
    let writes = matches!(a.verb.as_str(), "create" | "update" | "patch");
    let rbac = a.group == GROUP && a.subresource.is_empty();
    if !writes || !rbac || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(Decision::allow(""));
    }
    let ns = a.namespace.as_str();
    let obj: Option<Value> = (a.verb != "patch")
        .then(|| serde_json::from_slice(body).ok())
        .flatten();
    match a.resource.as_str() {
        kind @ ("roles" | "clusterroles") => {
            if may(store, user, "escalate", kind, ns, &a.name)? {
                return Ok(Decision::allow("may escalate"));
            }
            let Some(obj) = obj else {
                return Ok(Decision::deny(format!(
                    "patching {kind} needs the escalate verb on them (the result must not grant more than you hold)"
                )));
            };
            let rules = obj["rules"].as_array().cloned().unwrap_or_default();
            Ok(match holds(store, user, ns, &rules)? {
                None => Decision::allow("holds every rule"),
                Some(lack) => Decision::deny(format!(
                    "user \"{}\" is attempting to grant RBAC permissions not currently held: {lack}",
                    user.name
                )),
            })
        }
        kind @ ("rolebindings" | "clusterrolebindings") => {
            let Some(obj) = obj else {
                return Ok(Decision::deny(format!(
                    "patching {kind} needs the bind verb on the role they refer to"
                )));
            };
            let role_kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let (plural, key) = match role_kind {
                "ClusterRole" => (
                    "clusterroles",
                    format!("/registry/{GROUP}/clusterroles/{role}"),
                ),
                "Role" => ("roles", format!("/registry/{GROUP}/roles/{ns}/{role}")),
                _ => {
                    return Ok(Decision::deny(format!(
                        "roleRef kind {role_kind:?} is not Role or ClusterRole"
                    )))
                }
            };
            if may(store, user, "bind", plural, ns, role)? {
                return Ok(Decision::allow("may bind the role"));
            }
            let rules = store
                .get(&key)?
                .map(|kv| decode(&kv)["rules"].as_array().cloned().unwrap_or_default())
                .unwrap_or_default();
            Ok(match holds(store, user, ns, &rules)? {
                None => Decision::allow("holds every rule of the role"),
                Some(lack) => Decision::deny(format!(
                    "user \"{}\" is attempting to grant RBAC permissions not currently held: {lack}",
                    user.name
                )),
            })
        }
        _ => Ok(Decision::allow("")),
    }
}
