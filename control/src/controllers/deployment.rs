//! Deployment: one ReplicaSet per pod template (named by the template's hash, labelled
//! pod-template-hash), scaled to spec.replicas; ReplicaSets of older templates are
//! scaled to zero (the Recreate strategy; rolling updates come later).

use super::*;

fn template_hash(tpl: &Value) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in tpl.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{:x}", h)[..10].to_string()
}

pub fn reconcile(store: &Store) {
    let all_rs = list(store, "/registry/apps/replicasets/");
    for d in list(store, "/registry/apps/deployments/") {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let uid = d["metadata"]["uid"].as_str().unwrap_or("");
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let hash = template_hash(&d["spec"]["template"]);
        let owned: Vec<&Value> = all_rs
            .iter()
            .filter(|rs| controller_uid(rs) == Some(uid))
            .collect();
        let current = owned
            .iter()
            .find(|rs| rs["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
        match current {
            None => {
                let mut tpl = d["spec"]["template"].clone();
                tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut labels = tpl["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"namespace": ns, "name": format!("{name}-{hash}"), "labels": labels, "generation": 1,
                                 "ownerReferences": [owner_ref(&d, "apps/v1", "Deployment")]},
                    "spec": {"replicas": replicas, "selector": selector, "template": tpl}
                });
                create(store, "apps", "replicasets", rs);
            }
            Some(rs) if rs["spec"]["replicas"].as_i64() != Some(replicas) => {
                let mut next = (*rs).clone();
                next["spec"]["replicas"] = json!(replicas);
                update(store, &key_of(rs, "apps", "replicasets"), &next);
            }
            _ => {}
        }
        for old in owned
            .iter()
            .filter(|rs| rs["metadata"]["labels"]["pod-template-hash"] != hash.as_str())
        {
            if old["spec"]["replicas"].as_i64() != Some(0) {
                let mut next = (*old).clone();
                next["spec"]["replicas"] = json!(0);
                update(store, &key_of(old, "apps", "replicasets"), &next);
            }
        }
        let sum = |f: &str| {
            owned
                .iter()
                .map(|rs| rs["status"][f].as_i64().unwrap_or(0))
                .sum::<i64>()
        };
        let updated = current.map_or(0, |rs| rs["status"]["replicas"].as_i64().unwrap_or(0));
        let status = json!({"replicas": sum("replicas"), "updatedReplicas": updated, "readyReplicas": sum("readyReplicas"),
                            "availableReplicas": sum("availableReplicas"), "observedGeneration": d["metadata"]["generation"]});
        if d["status"] != status {
            let mut next = d.clone();
            next["status"] = status;
            update(store, &key_of(&d, "apps", "deployments"), &next);
        }
    }
}
