//! Endpoints and EndpointSlices from Services and their pods: for a Service with a
//! selector, the pods that match it and have an IP, Ready ones as addresses and the rest
//! as not-ready, with each service port resolved to the pod's port (named target ports
//! looked up in the pod's containers). What kube-proxy programs its rules from.

use super::*;

/// Marks the Endpoints this controller manages (user-made ones for selector-less
/// Services are left alone); kube's controller sets the same annotation.
const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const SLICE_OWNER: &str = "endpointslice.kubernetes.io/managed-by";
const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    sel.as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
}

/// The pod's port for a service port's targetPort (a number, or a container port name).
fn target_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match &svc_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_i64()),
        },
        _ => svc_port["port"].as_i64(),
    }
}

pub fn reconcile(store: &Store) -> Result<(), StoreError> {
    let start = std::time::SystemTime::now();
    let services = list(store, "/registry/core/services/")?;
    let selects = |s: &Value| {
        s["spec"]["selector"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    };
    // Pods matter only to Services that select them.
    let pods = if services.iter().any(selects) {
        list_pods(store, "/registry/core/pods/")?
    } else {
        Vec::new()
    };
    let endpoints = list(store, "/registry/core/endpoints/")?;
    let slices = list(store, "/registry/discovery.k8s.io/endpointslices/")?;
    for svc in &services {
        let sel = &svc["spec"]["selector"];
        if sel.as_object().is_none_or(|m| m.is_empty()) {
            continue; // endpoints of selector-less services are the user's
        }
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = svc["metadata"]["name"].as_str().unwrap_or("");
        let matching: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                p["metadata"]["namespace"] == ns
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["podIP"].is_string()
                    && selector_matches(sel, &p["metadata"]["labels"])
            })
            .collect();
        let svc_ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        // Endpoints: pods grouped by their resolved ports (one subset per port set).
        let mut subsets: Vec<Value> = Vec::new();
        for p in &matching {
            let ports: Vec<Value> = svc_ports
                .iter()
                .filter_map(|sp| {
                    let port = target_port(sp, p)?;
                    let mut e =
                        json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(n) = sp["name"].as_str().filter(|n| !n.is_empty()) {
                        e["name"] = json!(n);
                    }
                    Some(e)
                })
                .collect();
            let addr = json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}});
            let field = if pod_ready(p) {
                "addresses"
            } else {
                "notReadyAddresses"
            };
            match subsets.iter_mut().find(|s| s["ports"] == json!(ports)) {
                Some(s) => match s[field].as_array_mut() {
                    Some(a) => a.push(addr),
                    None => s[field] = json!([addr]),
                },
                None => {
                    let mut s = json!({"ports": ports});
                    s[field] = json!([addr]);
                    subsets.push(s);
                }
            }
        }
        for s in subsets.iter_mut() {
            for f in ["addresses", "notReadyAddresses"] {
                if let Some(a) = s[f].as_array_mut() {
                    a.sort_by(|x, y| x["ip"].as_str().cmp(&y["ip"].as_str()));
                }
            }
        }
        let existing = endpoints
            .iter()
            .find(|e| e["metadata"]["namespace"] == ns && e["metadata"]["name"] == name);
        let mut labels = svc["metadata"]["labels"].clone();
        if labels.is_null() {
            labels = json!({});
        }
        match existing {
            Some(e) if e["subsets"] == json!(subsets) => {}
            Some(e) => {
                let mut next = e.clone();
                next["subsets"] = json!(subsets);
                next["metadata"]["annotations"][TRIGGER] = json!(now_rfc3339());
                update(store, &key_of(e, "core", "endpoints"), &next)?;
            }
            None => {
                let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"namespace": ns, "name": name, "labels": labels, "annotations": {TRIGGER: now_rfc3339()}},
                    "subsets": subsets});
                create(store, "core", "endpoints", ep)?;
            }
        }

        // One EndpointSlice per service (kube splits at 100 endpoints; one is enough here).
        let slice_ports: Vec<Value> = svc_ports
            .iter()
            .map(|sp| {
                let port = matching
                    .first()
                    .and_then(|p| target_port(sp, p))
                    .or_else(|| sp["targetPort"].as_i64())
                    .or_else(|| sp["port"].as_i64());
                json!({"name": sp["name"].as_str().unwrap_or(""), "port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")})
            })
            .collect();
        let mut eps: Vec<Value> = matching
            .iter()
            .map(|p| {
                let ready = pod_ready(p);
                json!({"addresses": [p["status"]["podIP"]], "conditions": {"ready": ready, "serving": ready, "terminating": false},
                       "nodeName": p["spec"]["nodeName"],
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
            })
            .collect();
        eps.sort_by(|x, y| x["addresses"][0].as_str().cmp(&y["addresses"][0].as_str()));
        let mine = slices.iter().find(|s| {
            s["metadata"]["namespace"] == ns
                && s["metadata"]["labels"]["kubernetes.io/service-name"] == name
                && s["metadata"]["labels"][SLICE_OWNER] == SLICE_MANAGER
        });
        match mine {
            Some(s) if s["endpoints"] == json!(eps) && s["ports"] == json!(slice_ports) => {}
            Some(s) => {
                let mut next = s.clone();
                next["endpoints"] = json!(eps);
                next["ports"] = json!(slice_ports);
                annotate_step(&mut next, start, &eps);
                update(
                    store,
                    &key_of(s, "discovery.k8s.io", "endpointslices"),
                    &next,
                )?;
            }
            None => {
                let mut l = labels.clone();
                l["kubernetes.io/service-name"] = json!(name);
                l[SLICE_OWNER] = json!(SLICE_MANAGER);
                let mut slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"namespace": ns, "generateName": format!("{name}-"), "labels": l,
                                 "ownerReferences": [owner_ref(svc, "v1", "Service")]},
                    "addressType": "IPv4", "endpoints": eps, "ports": slice_ports});
                annotate_step(&mut slice, start, &eps);
                create(store, "discovery.k8s.io", "endpointslices", slice)?;
            }
        }
    }
    // Endpoints of services that are gone (slices go with their owner, by GC).
    for e in &endpoints {
        let managed = e["metadata"]["annotations"][TRIGGER].is_string();
        let has_svc = services.iter().any(|s| {
            s["metadata"]["namespace"] == e["metadata"]["namespace"]
                && s["metadata"]["name"] == e["metadata"]["name"]
        });
        if managed && !has_svc {
            super::delete_unchanged(store, &key_of(e, "core", "endpoints"), e)?;
        }
    }
    Ok(())
}

/// The write's step for `kubectl skiff trace` (from the pass that saw the change to the
/// write) and the change-trigger time kube-proxy measures network programming from.
fn annotate_step(slice: &mut Value, start: std::time::SystemTime, eps: &[Value]) {
    let ready = eps
        .iter()
        .filter(|e| e["conditions"]["ready"] == true)
        .count();
    let step = skiff_apimachinery::trace::Step::since(start)
        .with_detail(format!("{} endpoints, {ready} ready", eps.len()));
    let a = &mut slice["metadata"]["annotations"];
    if !a.is_object() {
        *a = json!({});
    }
    for (k, v) in step.annotations() {
        a[k] = json!(v);
    }
    a[TRIGGER] = json!(skiff_apimachinery::trace::micro_time(start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_numeric_target_ports() {
        let pod =
            json!({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": "http"}), &pod),
            Some(8080)
        );
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": 9090}), &pod),
            Some(9090)
        );
        assert_eq!(target_port(&json!({"port": 80}), &pod), Some(80));
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": "nope"}), &pod),
            None
        );
    }
}
