//! Fields an update may not change, refused as kube-apiserver refuses them (422 Invalid
//! with "field is immutable"), so kubectl shows the same error.

use super::status::ApiError;
use serde_json::{json, Value};

fn changed(cur: &Value, next: &Value, path: &[&str]) -> bool {
    let get = |v: &Value| {
        path.iter()
            .try_fold(v, |v, k| v.get(*k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    get(cur) != get(next)
}

fn invalid(kind: &str, name: &str, field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(
        kind,
        name,
        &format!("{field}: Invalid value: {value}: {why}"),
    )
}

/// Check `next` against `cur` for a spec update of `kind`.
pub fn check(kind: &str, cur: &Value, next: &Value) -> Result<(), ApiError> {
    let name = cur["metadata"]["name"].as_str().unwrap_or("");
    match kind {
        "Job" => return super::job::immutable(cur, next),
        "StatefulSet" => return super::statefulset::immutable(cur, next),
        "Deployment" | "ReplicaSet" | "DaemonSet" if changed(cur, next, &["spec", "selector"]) => {
            return Err(invalid(
                kind,
                name,
                "spec.selector",
                &next["spec"]["selector"],
                "field is immutable",
            ));
        }
        "Service" => {
            let was = cur["spec"]["clusterIP"].as_str().unwrap_or("");
            let now = next["spec"]["clusterIP"].as_str().unwrap_or("");
            if !was.is_empty() && !now.is_empty() && was != now {
                return Err(invalid(
                    kind,
                    name,
                    "spec.clusterIP",
                    &json!(now),
                    "field is immutable",
                ));
            }
        }
        "ConfigMap" | "Secret"
            if cur["immutable"] == true
                && (changed(cur, next, &["data"])
                    || changed(cur, next, &["binaryData"])
                    || next["immutable"] != true) =>
        {
            return Err(ApiError::invalid(
                kind,
                name,
                "data: Forbidden: field is immutable when `immutable` is set",
            ));
        }
        "Pod" => {
            // Only images, activeDeadlineSeconds, added tolerations and a first nodeName
            // may change in a pod's spec.
            let neutral = |v: &Value| {
                let mut s = v["spec"].clone();
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = s[list].as_array_mut() {
                        for c in cs {
                            c.as_object_mut().map(|o| o.remove("image"));
                        }
                    }
                }
                if let Some(o) = s.as_object_mut() {
                    for f in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "terminationGracePeriodSeconds",
                    ] {
                        o.remove(f);
                    }
                    if v["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
                        o.remove("nodeName");
                    }
                }
                s
            };
            let mut before = neutral(cur);
            let after = neutral(next);
            // Binding: a pod without a node may get one.
            if cur["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
                if let (Some(b), Some(a)) = (before.as_object_mut(), after.as_object()) {
                    if let Some(n) = a.get("nodeName") {
                        b.insert("nodeName".into(), n.clone());
                    }
                }
            }
            if before != after {
                return Err(ApiError::invalid(kind, name, "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds`"));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_pods_and_immutable_configmaps() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "replicas": 1}});
        let mut d2 = d.clone();
        d2["spec"]["replicas"] = json!(3);
        assert!(check("Deployment", &d, &d2).is_ok());
        d2["spec"]["selector"]["matchLabels"]["app"] = json!("api");
        let e = check("Deployment", &d, &d2).unwrap_err();
        assert!(
            e.message.contains("spec.selector") && e.message.contains("immutable"),
            "{}",
            e.message
        );

        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a", "ports": []}]}});
        let mut p2 = p.clone();
        p2["spec"]["containers"][0]["image"] = json!("b");
        p2["spec"]["nodeName"] = json!("n1");
        assert!(check("Pod", &p, &p2).is_ok(), "image and a first binding");
        let mut p3 = p2.clone();
        p3["spec"]["containers"][0]["name"] = json!("d");
        assert!(check("Pod", &p2, &p3).is_err());
        let mut p4 = p2.clone();
        p4["spec"]["nodeName"] = json!("n2");
        assert!(check("Pod", &p2, &p4).is_err(), "no rebinding");

        let cm = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let mut cm2 = cm.clone();
        cm2["data"]["a"] = json!("2");
        assert!(check("ConfigMap", &cm, &cm2).is_err());
    }
}
