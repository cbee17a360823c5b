//! Pod placement by CPU and memory, as kube-scheduler's default profile does it:
//! filter the nodes a pod fits on, score the rest, take the best. Scores: least
//! allocated (weight 1), balanced allocation (1), spreading of one owner's pods (2).

mod filter;
mod nodeinfo;
pub mod resources;

use k8s_openapi::api::core::v1::{Node, Pod};
use std::collections::BTreeMap;

pub use filter::tolerates;
pub use nodeinfo::NodeInfo;

/// Why a pod fits nowhere; displays as kube-scheduler's FailedScheduling message.
#[derive(Debug, Clone, PartialEq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available", self.nodes)?;
        if !self.reasons.is_empty() {
            let parts: Vec<String> = self
                .reasons
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            write!(f, ": {}", parts.join(", "))?;
        }
        write!(f, ".")
    }
}

#[derive(Default)]
pub struct Scheduler {
    nodes: BTreeMap<String, NodeInfo>,
    /// Where the next search for feasible nodes starts (kube's nextStartNodeIndex), so
    /// searches that stop early still cover every node in turn.
    next_start: std::cell::Cell<usize>,
}

/// How many feasible nodes to find before scoring (kube-scheduler's adaptive
/// percentageOfNodesToScore: 50% minus 1% per 125 nodes, at least 5%, at least 100).
fn feasible_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let pct = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * pct / 100).max(100)
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a node (its pods' accounting is kept).
    pub fn upsert_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut info = NodeInfo::new(node);
        if let Some(old) = self.nodes.remove(&name) {
            info.requested = old.requested;
            info.pods = old.pods;
            info.host_ports = old.host_ports;
            info.owners = old.owners;
        }
        self.nodes.insert(name, info);
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Account a pod that runs on (or was bound to) `node`.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.add_pod(pod);
        }
    }

    pub fn forget(&mut self, pod: &Pod, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.remove_pod(pod);
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Pick a node for `pod`, or say why none fits.
    pub fn schedule(&self, pod: &Pod) -> Result<String, FitError> {
        self.place(pod).map(|p| p.node)
    }

    /// The same, with how the choice was made.
    pub fn place(&self, pod: &Pod) -> Result<Placement, FitError> {
        let req = resources::pod_requests(pod);
        let owner = nodeinfo::owner_uid(pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible = Vec::new();
        let total = self.nodes.len();
        let want = feasible_to_find(total);
        let start = self.next_start.get() % total.max(1);
        let mut seen = 0;
        let order = self
            .nodes
            .values()
            .skip(start)
            .chain(self.nodes.values().take(start));
        for n in order {
            seen += 1;
            let why = filter::check(pod, req, n);
            if why.is_empty() {
                feasible.push(n);
                if feasible.len() >= want {
                    break;
                }
            } else {
                for w in why {
                    *reasons.entry(w).or_default() += 1;
                }
            }
        }
        self.next_start.set((start + seen) % total.max(1));
        if feasible.is_empty() {
            return Err(FitError {
                nodes: self.nodes.len(),
                reasons,
            });
        }
        let max_owned = owner
            .as_ref()
            .map(|o| {
                feasible
                    .iter()
                    .map(|n| n.owners.get(o).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let score = |n: &NodeInfo| -> i64 {
            let frac = |used: i64, cap: i64| {
                if cap <= 0 {
                    1.0
                } else {
                    (used as f64 / cap as f64).min(1.0)
                }
            };
            let cpu = frac(
                n.requested.milli_cpu + req.milli_cpu,
                n.allocatable.milli_cpu,
            );
            let mem = frac(n.requested.memory + req.memory, n.allocatable.memory);
            let least = ((1.0 - cpu) + (1.0 - mem)) * 50.0;
            let balanced = 100.0 - (cpu - mem).abs() * 100.0;
            let spread = match &owner {
                Some(o) if max_owned > 0 => {
                    100.0
                        * (1.0
                            - f64::from(n.owners.get(o).copied().unwrap_or(0))
                                / f64::from(max_owned))
                }
                _ => 100.0,
            };
            (least + balanced + 2.0 * spread) as i64
        };
        // Highest score; among equals one at random, as kube-scheduler's selectHost does
        // (the first by name would stack equal pods of different owners on one node).
        let scores: Vec<i64> = feasible.iter().map(|n| score(n)).collect();
        let top = *scores.iter().max().expect("non-empty");
        let best: Vec<&NodeInfo> = feasible
            .iter()
            .zip(&scores)
            .filter(|(_, s)| **s == top)
            .map(|(n, _)| *n)
            .collect();
        Ok(Placement {
            node: best[fastrand::usize(..best.len())].name.clone(),
            nodes: total,
            checked: seen,
            feasible: feasible.len(),
            filtered: reasons,
            score: top,
            tied: best.len(),
        })
    }
}

/// A scheduling decision and what led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// Nodes known, nodes the filters were run on (the search stops after enough fit).
    pub nodes: usize,
    pub checked: usize,
    pub feasible: usize,
    /// Filter failure → how many checked nodes it ruled out.
    pub filtered: BTreeMap<String, usize>,
    /// The winner's score, and how many feasible nodes shared it.
    pub score: i64,
    pub tied: usize,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: filters passed on {} of {} checked nodes ({} known)",
            self.node, self.feasible, self.checked, self.nodes
        )?;
        for (why, n) in &self.filtered {
            write!(f, "; {n} {why}")?;
        }
        write!(f, "; score {} ({} tied)", self.score, self.tied)
    }
}

#[cfg(test)]
mod tests;
