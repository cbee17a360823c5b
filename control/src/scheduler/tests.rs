use super::*;
use serde_json::json;

pub fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

pub fn pod(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[test]
fn places_by_cpu_and_memory_and_explains_failures() {
    let mut s = Scheduler::new();
    s.upsert_node(node("small", "1", "1Gi", json!({})));
    s.upsert_node(node("big", "4", "8Gi", json!({})));
    let p = pod("p", "2", "1Gi", json!({}));
    assert_eq!(s.schedule(&p).unwrap(), "big", "only big has 2 CPUs");
    s.assume(&p, "big");
    let q = pod("q", "3", "1Gi", json!({}));
    let e = s.schedule(&q).unwrap_err();
    assert_eq!(
        e.to_string(),
        "0/2 nodes are available: 2 Insufficient cpu."
    );
    let m = pod("m", "100m", "10Gi", json!({}));
    assert_eq!(
        s.schedule(&m).unwrap_err().to_string(),
        "0/2 nodes are available: 2 Insufficient memory."
    );
    // Least allocated: a small pod goes where more is free.
    s.forget(&p, "big");
    assert_eq!(
        s.schedule(&pod("t", "100m", "100Mi", json!({}))).unwrap(),
        "big"
    );
}

#[test]
fn taints_tolerations_unschedulable_and_readiness() {
    let mut s = Scheduler::new();
    s.upsert_node(node(
        "tainted",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    ));
    s.upsert_node(node(
        "cordoned",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    ));
    s.upsert_node(node(
        "down",
        "4",
        "8Gi",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    ));
    let p = pod("p", "100m", "10Mi", json!({}));
    let e = s.schedule(&p).unwrap_err().to_string();
    assert_eq!(e, "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were not ready, 1 node(s) were unschedulable.");
    let tol = pod(
        "t",
        "100m",
        "10Mi",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(s.schedule(&tol).unwrap(), "tainted");
    let exists_all = pod(
        "x",
        "100m",
        "10Mi",
        json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
    );
    assert!(
        s.schedule(&exists_all).is_ok(),
        "an empty-key Exists toleration tolerates every taint"
    );
    let wrong = pod(
        "w",
        "100m",
        "10Mi",
        json!({"spec": {"tolerations": [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]}}),
    );
    assert!(s.schedule(&wrong).is_err());
}

#[test]
fn node_selector_affinity_and_host_ports() {
    let mut s = Scheduler::new();
    s.upsert_node(node(
        "a",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "z1", "gen": "3"}}}),
    ));
    s.upsert_node(node(
        "b",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "z2", "gen": "5"}}}),
    ));
    let sel = pod(
        "s",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"zone": "z2"}}}),
    );
    assert_eq!(s.schedule(&sel).unwrap(), "b");
    let aff = pod(
        "a",
        "1",
        "1Gi",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["4"]}]}
        ]}}}}}),
    );
    assert_eq!(s.schedule(&aff).unwrap(), "a");
    let none = pod(
        "n",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"zone": "z9"}}}),
    );
    assert_eq!(
        s.schedule(&none).unwrap_err().to_string(),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    let web = |n: &str| {
        pod(
            n,
            "100m",
            "10Mi",
            json!({"spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        )
    };
    let first = s.schedule(&web("w1")).unwrap();
    s.assume(&web("w1"), &first);
    let second = s.schedule(&web("w2")).unwrap();
    assert_ne!(first, second, "host port 8080 is taken on {first}");
    s.assume(&web("w2"), &second);
    assert!(s
        .schedule(&web("w3"))
        .unwrap_err()
        .to_string()
        .contains("2 node(s) didn't have free ports"));
}

#[test]
fn replicas_of_one_owner_spread() {
    let mut s = Scheduler::new();
    for n in ["n1", "n2", "n3"] {
        s.upsert_node(node(n, "8", "16Gi", json!({})));
    }
    let owned = |i: usize| {
        pod(
            &format!("web-{i}"),
            "100m",
            "64Mi",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}]}}),
        )
    };
    let mut placed = std::collections::BTreeMap::new();
    for i in 0..6 {
        let p = owned(i);
        let n = s.schedule(&p).unwrap();
        s.assume(&p, &n);
        *placed.entry(n).or_insert(0) += 1;
    }
    assert_eq!(
        placed.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{placed:?}"
    );
}

#[test]
fn ties_are_broken_at_random() {
    let mut s = Scheduler::new();
    for n in ["a", "b", "c"] {
        s.upsert_node(node(n, "4", "8Gi", json!({})));
    }
    // Pods of no owner and no requests: every node scores the same.
    let mut count = std::collections::HashMap::new();
    for i in 0..300 {
        let p = pod(&format!("p{i}"), "0", "0", json!({}));
        *count.entry(s.schedule(&p).unwrap()).or_insert(0) += 1;
    }
    for n in ["a", "b", "c"] {
        // Expected 100 each; below 50 has odds far under one in a million.
        assert!(count.get(n).copied().unwrap_or(0) > 50, "{count:?}");
    }
}
