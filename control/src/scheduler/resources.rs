//! Resource quantities (Kubernetes' "500m", "128Mi", "1.5", "2G") and pod requests.

use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

/// CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

/// Parse a quantity into its value times `scale` (1000 for CPU millicores, 1 for bytes).
pub fn parse_quantity(q: &str, scale: i64) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some((n * mult * scale as f64).ceil() as i64)
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

#[cfg(test)]
mod tests {
    use super::parse_quantity as q;

    #[test]
    fn quantities() {
        assert_eq!(q("500m", 1000), Some(500));
        assert_eq!(q("2", 1000), Some(2000));
        assert_eq!(q("1.5", 1000), Some(1500));
        assert_eq!(q("128Mi", 1), Some(128 << 20));
        assert_eq!(q("1G", 1), Some(1_000_000_000));
        assert_eq!(q("1e3", 1), Some(1000));
        assert_eq!(q("12x", 1), None);
    }
}
