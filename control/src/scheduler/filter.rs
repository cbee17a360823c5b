//! Feasibility checks, each returning the reason string kube-scheduler reports in a
//! FailedScheduling event ("0/3 nodes are available: 2 Insufficient cpu, ...").

use super::nodeinfo::{host_ports, NodeInfo};
use super::resources::Resources;
use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let exists = t.operator.as_deref() == Some("Exists");
    match t.key.as_deref() {
        None | Some("") => exists,
        Some(k) if k != taint.key => false,
        Some(_) => {
            exists || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

fn untolerated_taint(pod: &Pod, n: &NodeInfo) -> Option<String> {
    let tols: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let taints = n
        .node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tols.iter().any(|tol| tolerates(tol, t)))
        .map(|t| {
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(Ok(bound))) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                vals.first().map(|b| b.parse::<i64>()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(t: &NodeSelectorTerm, n: &NodeInfo) -> bool {
    let labels = n.node.metadata.labels.as_ref();
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false; // an empty term selects nothing
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&n.name)))
}

fn selector_mismatch(pod: &Pod, n: &NodeInfo) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let labels = n.node.metadata.labels.as_ref();
    if let Some(sel) = &spec.node_selector {
        if !sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return true;
        }
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        if !req.node_selector_terms.iter().any(|t| term_matches(t, n)) {
            return true;
        }
    }
    false
}

fn ready(n: &NodeInfo) -> bool {
    n.node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// All reasons `pod` cannot go to `n` (empty: it fits). `req` is the pod's request.
pub fn check(pod: &Pod, req: Resources, n: &NodeInfo) -> Vec<String> {
    let mut why = Vec::new();
    if !ready(n) {
        why.push("node(s) were not ready".to_string());
    }
    if n.node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let tolerated = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| {
                ts.iter().any(|t| {
                    tolerates(
                        t,
                        &Taint {
                            key: "node.kubernetes.io/unschedulable".into(),
                            effect: "NoSchedule".into(),
                            ..Default::default()
                        },
                    )
                })
            });
        if !tolerated {
            why.push("node(s) were unschedulable".to_string());
        }
    }
    if let Some(t) = untolerated_taint(pod, n) {
        why.push(t);
    }
    if selector_mismatch(pod, n) {
        why.push("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    if n.pods + 1 > n.max_pods {
        why.push("Too many pods".to_string());
    }
    if req.milli_cpu > 0 && n.requested.milli_cpu + req.milli_cpu > n.allocatable.milli_cpu {
        why.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && n.requested.memory + req.memory > n.allocatable.memory {
        why.push("Insufficient memory".to_string());
    }
    let wanted = host_ports(pod);
    if wanted.iter().any(|(proto, ip, port)| {
        n.host_ports.iter().any(|(p2, ip2, port2)| {
            p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    }) {
        why.push("node(s) didn't have free ports for the requested pod ports".to_string());
    }
    why
}
