//! Defaulting, as the API server fills fields clients leave out (what `kubectl get -o
//! yaml` shows and what kubectl's rollout commands rely on).

use serde_json::{json, Value};

fn set_default(v: &mut Value, path: &[&str], default: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    let last = path[path.len() - 1];
    if cur[last].is_null() {
        cur[last] = default;
    }
}

pub fn apply(kind: &str, v: &mut Value) {
    match kind {
        "Deployment" => {
            set_default(v, &["spec", "replicas"], json!(1));
            set_default(v, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(v, &["spec", "progressDeadlineSeconds"], json!(600));
            set_default(v, &["spec", "strategy", "type"], json!("RollingUpdate"));
            if v["spec"]["strategy"]["type"] == "RollingUpdate" {
                set_default(
                    v,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    json!("25%"),
                );
                set_default(
                    v,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    json!("25%"),
                );
            }
        }
        "ReplicaSet" => set_default(v, &["spec", "replicas"], json!(1)),
        // kube-apiserver always gives a pod a securityContext (clients such as kubectl
        // debug read it without a nil check).
        "Pod" => set_default(v, &["spec", "securityContext"], json!({})),
        "Job" => super::job::defaults(v),
        "CronJob" => super::cronjob::defaults(v),
        "StatefulSet" => super::statefulset::defaults(v),
        "DaemonSet" => {
            set_default(v, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(
                v,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            if v["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
                set_default(
                    v,
                    &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"],
                    json!(1),
                );
                set_default(
                    v,
                    &["spec", "updateStrategy", "rollingUpdate", "maxSurge"],
                    json!(0),
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn deployment_defaults_keep_what_is_set() {
        let mut d = serde_json::json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        super::apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert!(d["spec"]["strategy"]["rollingUpdate"].is_null());
        let mut ds = serde_json::json!({"spec": {}});
        super::apply("DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
    }
}
