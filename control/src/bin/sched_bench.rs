//! Scheduler throughput on simulated nodes (Node objects only), as kube-scheduler's
//! scheduler_perf does it: schedule pods one by one, each placement accounted before the
//! next. Prints pods/s at 100 and 1,000 nodes.

use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_control::scheduler::Scheduler;
use std::time::Instant;

fn node(i: usize) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("node-{i:04}"), "labels": {"zone": format!("z{}", i % 3)}},
        "spec": {},
        "status": {"allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "default",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("rs-{}", i % 20), "uid": format!("uid-{}", i % 20), "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}
    }))
    .unwrap()
}

fn main() {
    println!("scheduler: filter (ready, taints, selector/affinity, cpu/memory/pods, host ports) + score (least allocated, balanced, spread)");
    for (nodes, pods) in [(100usize, 5_000usize), (1_000, 10_000)] {
        let mut s = Scheduler::new();
        for i in 0..nodes {
            s.upsert_node(node(i));
        }
        let ps: Vec<Pod> = (0..pods).map(pod).collect();
        let start = Instant::now();
        for p in &ps {
            let n = s.schedule(p).expect("fits");
            s.assume(p, &n);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {nodes:>5} nodes: {pods} pods in {secs:.2}s = {:.0} pods/s",
            pods as f64 / secs
        );
    }
}
