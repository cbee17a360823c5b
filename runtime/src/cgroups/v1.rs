//! cgroup v1: one directory per mounted hierarchy (cpu, memory, pids, ...).

use super::{collect_pids, convert, read_file, read_kv, read_u64, write_file, Stats};
use crate::error::{Context, Error, Result};
use oci_spec::runtime::LinuxResources;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct V1 {
    path: String,
    /// hierarchy name (e.g. "cpu,cpuacct" or "name=systemd") → its mount point.
    mounts: BTreeMap<String, PathBuf>,
}

/// v1 hierarchies, parsed once per process.
fn hierarchies() -> Result<BTreeMap<String, PathBuf>> {
    static CACHE: std::sync::OnceLock<BTreeMap<String, PathBuf>> = std::sync::OnceLock::new();
    if let Some(m) = CACHE.get() {
        return Ok(m.clone());
    }
    let m = read_hierarchies()?;
    Ok(CACHE.get_or_init(|| m).clone())
}

/// v1 hierarchies from /proc/self/mountinfo, keyed by their controller list.
fn read_hierarchies() -> Result<BTreeMap<String, PathBuf>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").step(|| "read /proc/self/mountinfo")?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        let ctrls: Vec<&str> = super_opts
            .split(',')
            .filter(|o| {
                !matches!(*o, "rw" | "ro")
                    && !o.starts_with("release_agent")
                    && *o != "clone_children"
                    && *o != "noprefix"
                    && *o != "xattr"
            })
            .collect();
        let Some(mp) = left.split_whitespace().nth(4) else {
            continue;
        };
        if ctrls.is_empty() {
            continue;
        }
        out.entry(ctrls.join(","))
            .or_insert_with(|| PathBuf::from(mp));
    }
    if out.is_empty() {
        return Err(Error::Unsupported(
            "no cgroup v1 hierarchy is mounted".into(),
        ));
    }
    Ok(out)
}

impl V1 {
    pub fn new(path: &str) -> Result<Self> {
        Ok(V1 {
            path: path.to_string(),
            mounts: hierarchies()?,
        })
    }

    /// This cgroup's directory in the hierarchy holding `ctrl`.
    fn dir_of(&self, ctrl: &str) -> Option<PathBuf> {
        self.mounts
            .iter()
            .find(|(k, _)| k.split(',').any(|c| c == ctrl))
            .map(|(_, mp)| mp.join(self.path.trim_start_matches('/')))
    }

    fn need(&self, ctrl: &str) -> Result<PathBuf> {
        self.dir_of(ctrl).ok_or_else(|| {
            Error::Unsupported(format!("cgroup v1 controller {ctrl} is not mounted"))
        })
    }

    pub fn dirs(&self) -> Vec<(String, PathBuf)> {
        self.mounts
            .iter()
            .map(|(k, mp)| (k.clone(), mp.join(self.path.trim_start_matches('/'))))
            .collect()
    }

    pub fn create(&self) -> Result<()> {
        for (name, mp) in &self.mounts {
            let mut cur = mp.clone();
            for part in self.path.split('/').filter(|s| !s.is_empty()) {
                let parent = cur.clone();
                cur.push(part);
                if !cur.exists() {
                    std::fs::create_dir(&cur)
                        .or_else(|e| {
                            if e.kind() == std::io::ErrorKind::AlreadyExists {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .step(|| format!("create cgroup {}", cur.display()))?;
                }
                // A new cpuset cgroup starts with no cpus or mems: inherit the parent's.
                if name.split(',').any(|c| c == "cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if read_file(&cur, f).unwrap_or_default().is_empty() {
                            let v = read_file(&parent, f).unwrap_or_default();
                            write_file(&cur, f, &v)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            let d = self.need("memory")?;
            if let Some(l) = m.limit() {
                let l = convert::limit_str(l).replace("max", "-1");
                // Raising the limit above memsw fails until memsw is raised: try both orders.
                if write_file(&d, "memory.limit_in_bytes", &l).is_err() {
                    if let Some(s) = m.swap() {
                        write_file(&d, "memory.memsw.limit_in_bytes", &s.to_string())?;
                    }
                    write_file(&d, "memory.limit_in_bytes", &l)?;
                }
            }
            if let Some(s) = m.swap() {
                if d.join("memory.memsw.limit_in_bytes").exists() {
                    write_file(&d, "memory.memsw.limit_in_bytes", &s.to_string())?;
                } else if s > 0 {
                    return Err(Error::Unsupported(
                        "memory.swap: swap accounting is not enabled on this host".into(),
                    ));
                }
            }
            if let Some(r) = m.reservation() {
                write_file(&d, "memory.soft_limit_in_bytes", &r.to_string())?;
            }
            if let Some(sw) = m.swappiness() {
                write_file(&d, "memory.swappiness", &sw.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write_file(&d, "memory.oom_control", "1")?;
            }
        }
        if let Some(c) = res.cpu() {
            if c.shares().is_some()
                || c.quota().is_some()
                || c.period().is_some()
                || c.burst().is_some()
                || c.realtime_period().is_some()
                || c.realtime_runtime().is_some()
            {
                let d = self.need("cpu")?;
                if let Some(s) = c.shares() {
                    write_file(&d, "cpu.shares", &s.to_string())?;
                }
                if let Some(p) = c.period() {
                    write_file(&d, "cpu.cfs_period_us", &p.to_string())?;
                }
                if let Some(q) = c.quota() {
                    write_file(&d, "cpu.cfs_quota_us", &q.to_string())?;
                }
                if let Some(b) = c.burst() {
                    write_file(&d, "cpu.cfs_burst_us", &b.to_string())?;
                }
                if let Some(p) = c.realtime_period() {
                    write_file(&d, "cpu.rt_period_us", &p.to_string())?;
                }
                if let Some(r) = c.realtime_runtime() {
                    write_file(&d, "cpu.rt_runtime_us", &r.to_string())?;
                }
            }
            if c.idle().is_some_and(|i| i != 0) {
                return Err(Error::Unsupported("cpu.idle needs cgroup v2".into()));
            }
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                write_file(&self.need("cpuset")?, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                write_file(&self.need("cpuset")?, "cpuset.mems", mems)?;
            }
        }
        if let Some(p) = res.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write_file(&self.need("pids")?, "pids.max", &v)?;
        }
        if let Some(b) = res.block_io() {
            let d = self.need("blkio")?;
            if let Some(w) = b.weight() {
                let f = if d.join("blkio.weight").exists() {
                    "blkio.weight"
                } else {
                    "blkio.bfq.weight"
                };
                write_file(&d, f, &w.to_string())?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    write_file(
                        &d,
                        "blkio.weight_device",
                        &format!("{}:{} {w}", wd.major(), wd.minor()),
                    )?;
                }
            }
            let throttles = [
                (
                    b.throttle_read_bps_device(),
                    "blkio.throttle.read_bps_device",
                ),
                (
                    b.throttle_write_bps_device(),
                    "blkio.throttle.write_bps_device",
                ),
                (
                    b.throttle_read_iops_device(),
                    "blkio.throttle.read_iops_device",
                ),
                (
                    b.throttle_write_iops_device(),
                    "blkio.throttle.write_iops_device",
                ),
            ];
            for (list, file) in throttles {
                for t in list.iter().flatten() {
                    write_file(
                        &d,
                        file,
                        &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        }
        for h in res.hugepage_limits().iter().flatten() {
            let d = self.need("hugetlb")?;
            write_file(
                &d,
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::Unsupported(
                "linux.resources.unified needs cgroup v2 (this host runs cgroup v1)".into(),
            ));
        }
        if let Some(d) = self.dir_of("devices") {
            // Rules apply in order: start from deny-all, then replay.
            write_file(&d, "devices.deny", "a")?;
            for r in convert::device_rules(res.devices().as_ref()) {
                let file = if r.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(&d, file, &convert::device_rule(&r))?;
            }
        }
        Ok(())
    }

    pub fn add(&self, pid: i32) -> Result<()> {
        for (_, d) in self.dirs() {
            write_file(&d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let d = self
            .dir_of("pids")
            .or_else(|| self.dir_of("memory"))
            .or_else(|| self.dirs().first().map(|(_, d)| d.clone()));
        let mut out = Vec::new();
        if let Some(d) = d {
            collect_pids(&d, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let d = self.need("freezer")?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..1000 {
            write_file(&d, "freezer.state", want)?;
            if read_file(&d, "freezer.state").as_deref() == Some(want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(Error::Init(format!(
            "cgroup {} did not reach {want}",
            d.display()
        )))
    }

    pub fn is_frozen(&self) -> bool {
        self.dir_of("freezer")
            .and_then(|d| read_file(&d, "freezer.state"))
            .is_some_and(|s| s == "FROZEN" || s == "FREEZING")
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        if let Some(d) = self.dir_of("cpuacct") {
            s.cpu.usage.total = read_u64(&d, "cpuacct.usage").unwrap_or(0);
            s.cpu.usage.percpu = read_file(&d, "cpuacct.usage_percpu")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let st = read_kv(&d, "cpuacct.stat");
            // cpuacct.stat is in USER_HZ ticks.
            let tick = 1_000_000_000 / clk_tck();
            s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * tick;
            s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * tick;
        }
        if let Some(d) = self.dir_of("cpu") {
            let st = read_kv(&d, "cpu.stat");
            s.cpu.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
            s.cpu.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
            s.cpu.throttling.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
        }
        if let Some(d) = self.dir_of("memory") {
            let entry = |p: &str| super::stats::MemoryEntry {
                limit: read_u64(&d, &format!("{p}.limit_in_bytes")).unwrap_or(0),
                usage: read_u64(&d, &format!("{p}.usage_in_bytes")).unwrap_or(0),
                max: read_u64(&d, &format!("{p}.max_usage_in_bytes")).unwrap_or(0),
                failcnt: read_u64(&d, &format!("{p}.failcnt")).unwrap_or(0),
            };
            s.memory.usage = entry("memory");
            s.memory.swap = entry("memory.memsw");
            s.memory.raw = read_kv(&d, "memory.stat");
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
            let oc = read_kv(&d, "memory.oom_control");
            s.memory.oom_kill = oc.get("oom_kill").copied().unwrap_or(0);
        }
        if let Some(d) = self.dir_of("pids") {
            s.pids.current = read_u64(&d, "pids.current").unwrap_or(0);
            s.pids.limit = read_u64(&d, "pids.max").unwrap_or(0);
        }
        s
    }
}

pub(crate) fn clk_tck() -> u64 {
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}
