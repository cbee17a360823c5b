//! Per-node bookkeeping the scheduler keeps up to date as pods are bound: allocatable
//! and requested resources, pod count, host ports in use, pods per owner.

use super::resources::{allocatable, pod_requests, Resources};
use k8s_openapi::api::core::v1::{Node, Pod};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Node,
    pub name: String,
    pub allocatable: Resources,
    pub max_pods: i64,
    pub requested: Resources,
    pub pods: i64,
    /// (protocol, hostIP, port)
    pub host_ports: BTreeSet<(String, String, i32)>,
    /// owner uid → pods of that owner here
    pub owners: HashMap<String, u32>,
}

pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let mut v = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                v.push((
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                    hp,
                ));
            }
        }
    }
    v
}

pub fn owner_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        let (alloc, max_pods) = allocatable(&node);
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            node,
            allocatable: alloc,
            max_pods,
            requested: Resources::default(),
            pods: 0,
            host_ports: BTreeSet::new(),
            owners: HashMap::new(),
        }
    }

    /// Account a pod bound (or running) here.
    pub fn add_pod(&mut self, pod: &Pod) {
        let r = pod_requests(pod);
        self.requested.milli_cpu += r.milli_cpu;
        self.requested.memory += r.memory;
        self.pods += 1;
        self.host_ports.extend(host_ports(pod));
        if let Some(o) = owner_uid(pod) {
            *self.owners.entry(o).or_default() += 1;
        }
    }

    pub fn remove_pod(&mut self, pod: &Pod) {
        let r = pod_requests(pod);
        self.requested.milli_cpu -= r.milli_cpu;
        self.requested.memory -= r.memory;
        self.pods -= 1;
        for p in host_ports(pod) {
            self.host_ports.remove(&p);
        }
        if let Some(o) = owner_uid(pod) {
            if let Some(n) = self.owners.get_mut(&o) {
                *n = n.saturating_sub(1);
            }
        }
    }
}
