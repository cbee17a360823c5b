//! Container resource statistics in the shape `runc events --stats` prints (go-runc reads it).

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub total: u64,
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    /// OOM kills in this cgroup.
    pub oom_kill: u64,
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    pub current: u64,
    pub limit: u64,
}
