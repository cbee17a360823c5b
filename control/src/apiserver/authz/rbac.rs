//! RBAC: Roles and ClusterRoles hold rules (verbs × API groups × resources, optionally
//! resource names; or non-resource URLs); RoleBindings grant a role's rules inside their
//! namespace, ClusterRoleBindings everywhere, to users, groups and service accounts.
//! A request is allowed when any rule of any role bound to its user covers it.

use super::{groups, Attributes, Decision};
use crate::apiserver::objects::decode;
use crate::apiserver::tls::User;
use crate::store::{Store, StoreError};
use serde_json::Value;

const PREFIX: &str = "/registry/rbac.authorization.k8s.io";

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn has(list: &Value, want: &str) -> bool {
    strings(list).any(|x| x == "*" || x == want)
}

/// Whether one PolicyRule covers the request (Kubernetes' RuleAllows).
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return strings(&rule["nonResourceURLs"]).any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        });
    }
    if !has(&rule["apiGroups"], &a.group) {
        return false;
    }
    let combined = a.combined();
    let resource_ok = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty() && r == format!("*/{}", a.subresource))
            || (r.strip_suffix("/*") == Some(a.resource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names: Vec<&str> = strings(&rule["resourceNames"]).collect();
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

/// Whether a binding's subjects include the user.
fn binds(binding: &Value, user: &User, groups: &[String]) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            let name = s["name"].as_str().unwrap_or("");
            match s["kind"].as_str() {
                Some("User") => name == user.name,
                Some("Group") => groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = s["namespace"].as_str().unwrap_or("");
                    user.name == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

fn role_rules(store: &Store, role_ref: &Value, namespace: &str) -> Result<Vec<Value>, StoreError> {
    let name = role_ref["name"].as_str().unwrap_or("");
    let key = match role_ref["kind"].as_str() {
        Some("ClusterRole") => format!("{PREFIX}/clusterroles/{name}"),
        Some("Role") if !namespace.is_empty() => format!("{PREFIX}/roles/{namespace}/{name}"),
        _ => return Ok(Vec::new()),
    };
    Ok(store
        .get(&key)?
        .map(|kv| decode(&kv)["rules"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default())
}

pub fn authorize(store: &Store, user: &User, a: &Attributes) -> Result<Decision, StoreError> {
    let groups = groups(user);
    for b in store.list(&format!("{PREFIX}/clusterrolebindings/"))?.0 {
        let b = decode(&b);
        if binds(&b, user, &groups)
            && role_rules(store, &b["roleRef"], "")?
                .iter()
                .any(|r| rule_allows(r, a))
        {
            let name = b["metadata"]["name"].as_str().unwrap_or("");
            return Ok(Decision::allow(format!(
                "RBAC: allowed by ClusterRoleBinding \"{name}\""
            )));
        }
    }
    if !a.namespace.is_empty() && a.path.is_none() {
        let prefix = format!("{PREFIX}/rolebindings/{}/", a.namespace);
        for b in store.list(&prefix)?.0 {
            let b = decode(&b);
            if binds(&b, user, &groups)
                && role_rules(store, &b["roleRef"], &a.namespace)?
                    .iter()
                    .any(|r| rule_allows(r, a))
            {
                let name = b["metadata"]["name"].as_str().unwrap_or("");
                return Ok(Decision::allow(format!(
                    "RBAC: allowed by RoleBinding \"{name}/{}\"",
                    a.namespace
                )));
            }
        }
    }
    Ok(Decision::deny(""))
}
