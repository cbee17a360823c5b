//! cgroup v2: one unified directory; controllers enabled top-down through cgroup.subtree_control.

use super::{collect_pids, convert, read_file, read_kv, read_u64, write_file, Stats, CGROUP_ROOT};
use crate::error::{Context, Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct V2 {
    path: String,
}

impl V2 {
    pub fn new(path: &str) -> Self {
        V2 {
            path: path.to_string(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(CGROUP_ROOT).join(self.path.trim_start_matches('/'))
    }

    /// Create every level and enable, in each parent, the controllers the root offers.
    pub fn create(&self) -> Result<()> {
        let root = PathBuf::from(CGROUP_ROOT);
        let available = read_file(&root, "cgroup.controllers").unwrap_or_default();
        let enable: Vec<String> = available
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        let mut cur = root;
        for part in self.path.split('/').filter(|s| !s.is_empty()) {
            // Enable controllers in the parent before creating the child: no-internal-process
            // rule aside, this is the order the kernel wants.
            let have = read_file(&cur, "cgroup.subtree_control").unwrap_or_default();
            for c in &enable {
                if !have.split_whitespace().any(|h| h == &c[1..]) {
                    // A controller may be unavailable further down; skip what the kernel refuses.
                    let _ = write_file(&cur, "cgroup.subtree_control", c);
                }
            }
            cur.push(part);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).step(|| format!("create cgroup {}", cur.display())),
            }
        }
        Ok(())
    }

    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        let d = self.dir();
        if let Some(m) = res.memory() {
            if let Some(l) = m.limit() {
                write_file(&d, "memory.max", &convert::limit_str(l))?;
            }
            if let Some(r) = m.reservation() {
                write_file(&d, "memory.low", &convert::limit_str(r))?;
            }
            match convert::swap_max(m.limit(), m.swap()) {
                Ok(Some(v)) => write_file(&d, "memory.swap.max", &v)?,
                Ok(None) => {}
                Err(e) => return Err(Error::InvalidConfig(e)),
            }
            if m.swappiness().is_some_and(|s| s != 0) {
                return Err(Error::Unsupported(
                    "memory.swappiness does not exist in cgroup v2".into(),
                ));
            }
            if m.disable_oom_killer() == Some(true) {
                return Err(Error::Unsupported(
                    "memory.disableOOMKiller does not exist in cgroup v2".into(),
                ));
            }
        }
        if let Some(c) = res.cpu() {
            if let Some(s) = c.shares().filter(|s| *s > 0) {
                write_file(&d, "cpu.weight", &convert::shares_to_weight(s).to_string())?;
            }
            if let Some(v) = convert::cpu_max(c.quota(), c.period()) {
                write_file(&d, "cpu.max", &v)?;
            }
            if let Some(b) = c.burst() {
                write_file(&d, "cpu.max.burst", &b.to_string())?;
            }
            if let Some(i) = c.idle() {
                write_file(&d, "cpu.idle", &i.to_string())?;
            }
            if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
                return Err(Error::Unsupported(
                    "cpu.realtimeRuntime/realtimePeriod need cgroup v1".into(),
                ));
            }
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                write_file(&d, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                write_file(&d, "cpuset.mems", mems)?;
            }
        }
        if let Some(p) = res.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write_file(&d, "pids.max", &v)?;
        }
        if let Some(b) = res.block_io() {
            if let Some(w) = b.weight() {
                write_file(
                    &d,
                    "io.weight",
                    &format!("default {}", convert::blkio_to_io_weight(w)),
                )?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    write_file(
                        &d,
                        "io.weight",
                        &format!(
                            "{}:{} {}",
                            wd.major(),
                            wd.minor(),
                            convert::blkio_to_io_weight(w)
                        ),
                    )?;
                }
            }
            let throttles = [
                (b.throttle_read_bps_device(), "rbps"),
                (b.throttle_write_bps_device(), "wbps"),
                (b.throttle_read_iops_device(), "riops"),
                (b.throttle_write_iops_device(), "wiops"),
            ];
            for (list, key) in throttles {
                for t in list.iter().flatten() {
                    write_file(
                        &d,
                        "io.max",
                        &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        }
        for h in res.hugepage_limits().iter().flatten() {
            write_file(
                &d,
                &format!("hugetlb.{}.max", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(u) = res.unified() {
            for (k, v) in u {
                if k.contains('/') || k.starts_with('.') || !k.contains('.') {
                    return Err(Error::InvalidConfig(format!(
                        "unified key {k:?} is not a cgroup file name"
                    )));
                }
                write_file(&d, k, v)?;
            }
        }
        let rules = convert::device_rules(res.devices().as_ref());
        super::devices_bpf::attach(&d, &rules)?;
        Ok(())
    }

    pub fn add(&self, pid: i32) -> Result<()> {
        write_file(&self.dir(), "cgroup.procs", &pid.to_string())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        collect_pids(&self.dir(), &mut out);
        out.sort_unstable();
        Ok(out)
    }

    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let d = self.dir();
        write_file(&d, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..1000 {
            if read_file(&d, "cgroup.events")
                .unwrap_or_default()
                .lines()
                .any(|l| l == want)
            {
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
        read_file(&self.dir(), "cgroup.freeze").as_deref() == Some("1")
    }

    pub fn stats(&self) -> Stats {
        let d = self.dir();
        let mut s = Stats::default();
        let cpu = read_kv(&d, "cpu.stat");
        let g = |k: &str| cpu.get(k).copied().unwrap_or(0);
        s.cpu.usage.total = g("usage_usec") * 1000;
        s.cpu.usage.user = g("user_usec") * 1000;
        s.cpu.usage.kernel = g("system_usec") * 1000;
        s.cpu.throttling.periods = g("nr_periods");
        s.cpu.throttling.throttled_periods = g("nr_throttled");
        s.cpu.throttling.throttled_time = g("throttled_usec") * 1000;
        let max = |f: &str| match read_file(&d, f).as_deref() {
            Some("max") | None => u64::MAX,
            Some(v) => v.parse().unwrap_or(0),
        };
        s.memory.usage.usage = read_u64(&d, "memory.current").unwrap_or(0);
        s.memory.usage.limit = max("memory.max");
        s.memory.usage.max = read_u64(&d, "memory.peak").unwrap_or(0);
        s.memory.swap.usage = read_u64(&d, "memory.swap.current").unwrap_or(0);
        s.memory.swap.limit = max("memory.swap.max");
        s.memory.raw = read_kv(&d, "memory.stat");
        s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        let ev = read_kv(&d, "memory.events");
        s.memory.usage.failcnt = ev.get("max").copied().unwrap_or(0);
        s.memory.oom_kill = ev.get("oom_kill").copied().unwrap_or(0);
        s.pids.current = read_u64(&d, "pids.current").unwrap_or(0);
        s.pids.limit = match read_file(&d, "pids.max").as_deref() {
            Some("max") | None => 0,
            Some(v) => v.parse().unwrap_or(0),
        };
        s
    }
}
