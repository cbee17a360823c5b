//! Pod requests and node allocatable, in CPU millicores and memory bytes.

use k8s_openapi::api::core::v1::Pod;
pub use skiff_apimachinery::quantity::parse_quantity;
use std::collections::BTreeMap;

/// CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

fn from_map(
    m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Resources {
    let get = |k: &str, scale| {
        m.and_then(|m| m.get(k))
            .and_then(|q| parse_quantity(&q.0, scale))
            .unwrap_or(0)
    };
    Resources {
        milli_cpu: get("cpu", 1000),
        memory: get("memory", 1),
    }
}

/// What the scheduler reserves for a pod: the sum of its containers' requests, at least
/// the largest init container's (they run one at a time), plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let spec = match &pod.spec {
        Some(s) => s,
        None => return Resources::default(),
    };
    let mut r = Resources::default();
    for c in &spec.containers {
        let c = from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        r.milli_cpu += c.milli_cpu;
        r.memory += c.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let c = from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        r.milli_cpu = r.milli_cpu.max(c.milli_cpu);
        r.memory = r.memory.max(c.memory);
    }
    let o = from_map(spec.overhead.as_ref());
    r.milli_cpu += o.milli_cpu;
    r.memory += o.memory;
    r
}

pub fn allocatable(node: &k8s_openapi::api::core::v1::Node) -> (Resources, i64) {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let pods = a
        .and_then(|m| m.get("pods"))
        .and_then(|q| parse_quantity(&q.0, 1))
        .unwrap_or(110);
    (from_map(a), pods)
}
