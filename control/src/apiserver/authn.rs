//! Bootstrap tokens, as kube-apiserver's `--enable-bootstrap-token-auth`: a bearer token
//! `ID.SECRET` (6 and 16 of `[a-z0-9]`) is valid while the Secret
//! `kube-system/bootstrap-token-ID` of type `bootstrap.kubernetes.io/token` holds that
//! secret, allows authentication (`usage-bootstrap-authentication: "true"`), is not
//! expired and not being deleted. Its user is `system:bootstrap:ID` in
//! `system:bootstrappers` and the token's `auth-extra-groups` — a joining node, which may
//! ask for its certificate and nothing more (RBAC).

use crate::apiserver::objects::decode;
use crate::apiserver::tls::User;
use crate::store::{Store, StoreError};
use serde_json::Value;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const GROUP: &str = "system:bootstrappers";

/// `ID.SECRET` split, if it has the bootstrap token's form.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn data(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str()?)
        .ok()?;
    String::from_utf8(b).ok()
}

/// Equal without saying where they differ (a secret compared byte by byte in time).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The user a bearer token stands for; None when it is not a valid bootstrap token. A
/// store that cannot answer is an error, not a refusal.
pub fn bootstrap_token(store: &Store, token: &str) -> Result<Option<User>, StoreError> {
    let Some((id, secret)) = parse(token) else {
        return Ok(None);
    };
    let Some(kv) = store.get(&format!(
        "/registry/core/secrets/kube-system/bootstrap-token-{id}"
    ))?
    else {
        return Ok(None);
    };
    let s = decode(&kv);
    let valid = s["type"] == SECRET_TYPE
        && s["metadata"]["deletionTimestamp"].is_null()
        && data(&s, "token-id").as_deref() == Some(id)
        && data(&s, "token-secret").is_some_and(|have| same(&have, secret))
        && data(&s, "usage-bootstrap-authentication").as_deref() == Some("true")
        && data(&s, "expiration").is_none_or(|e| !expired(&e));
    if !valid {
        return Ok(None);
    }
    let mut groups = vec![GROUP.to_string()];
    for g in data(&s, "auth-extra-groups").unwrap_or_default().split(',') {
        let g = g.trim();
        // Only groups of the bootstrappers' own space (as kube checks).
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    Ok(Some(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    }))
}

/// Whether an RFC 3339 expiration lies in the past (an unreadable one counts as past).
pub fn expired(when: &str) -> bool {
    match crate::apiserver::table::humantime_parse(when) {
        Ok(t) => t <= std::time::SystemTime::now(),
        Err(()) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_kubeadms_form_and_compare_in_full() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcdef.0123456789abcde"), None);
        assert_eq!(parse("abcdef0123456789abcdef"), None);
        assert!(same("0123456789abcdef", "0123456789abcdef"));
        assert!(!same("0123456789abcdef", "0123456789abcdeF"));
        assert!(expired("2020-01-01T00:00:00Z"));
        assert!(!expired("2999-01-01T00:00:00Z"));
        assert!(expired("tomorrow"));
    }
}
