//! Cgroup management: v2 (unified) first, v1 for legacy and hybrid hosts.
//!
//! A `Manager` addresses one cgroup by its path relative to each hierarchy root
//! (e.g. `/skiff/abc`). Resource translation that differs between versions lives in
//! `convert`, the v2 device filter in `devices_bpf`.

pub mod convert;
pub mod devices_bpf;
pub mod stats;
mod v1;
mod v2;

use crate::error::{Context, Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

pub use stats::Stats;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Unified hierarchy when /sys/fs/cgroup itself is cgroup2; anything else
/// (legacy, or hybrid with a v2 mount at /sys/fs/cgroup/unified) is driven as v1.
pub fn detect() -> Version {
    match nix::sys::statfs::statfs(CGROUP_ROOT) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => Version::V2,
        _ => Version::V1,
    }
}

/// Normalize an OCI cgroupsPath; the default places containers under /skiff.
pub fn normalize_path(cgroups_path: Option<&Path>, id: &str) -> Result<String> {
    let p = match cgroups_path {
        Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
        _ => format!("/skiff/{id}"),
    };
    if p.contains(':') && !p.starts_with('/') {
        return Err(Error::Unsupported(format!(
            "cgroupsPath {p:?} is in systemd slice:prefix:name form; the systemd cgroup driver is not supported"
        )));
    }
    let mut out = String::new();
    for part in p.split('/').filter(|s| !s.is_empty()) {
        if part == ".." || part == "." {
            return Err(Error::InvalidConfig(format!(
                "cgroupsPath {p:?} must not contain . or .."
            )));
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        return Err(Error::InvalidConfig(
            "cgroupsPath must not be the root cgroup".into(),
        ));
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub enum Manager {
    V1(v1::V1),
    V2(v2::V2),
}

impl Manager {
    /// A manager for `path` on this host's cgroup version (nothing is created yet).
    pub fn open(path: &str) -> Result<Self> {
        Ok(match detect() {
            Version::V2 => Manager::V2(v2::V2::new(path)),
            Version::V1 => Manager::V1(v1::V1::new(path)?),
        })
    }

    pub fn version(&self) -> Version {
        match self {
            Manager::V1(_) => Version::V1,
            Manager::V2(_) => Version::V2,
        }
    }

    /// Create the cgroup (and parents) and enable what it needs.
    pub fn create(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.create(),
            Manager::V2(m) => m.create(),
        }
    }

    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        match self {
            Manager::V1(m) => m.apply(res),
            Manager::V2(m) => m.apply(res),
        }
    }

    /// Move `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        match self {
            Manager::V1(m) => m.add(pid),
            Manager::V2(m) => m.add(pid),
        }
    }

    /// All pids in the cgroup (and its children).
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self {
            Manager::V1(m) => m.pids(),
            Manager::V2(m) => m.pids(),
        }
    }

    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match self {
            Manager::V1(m) => m.freeze(frozen),
            Manager::V2(m) => m.freeze(frozen),
        }
    }

    pub fn is_frozen(&self) -> bool {
        match self {
            Manager::V1(m) => m.is_frozen(),
            Manager::V2(m) => m.is_frozen(),
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Manager::V1(m) => m.stats(),
            Manager::V2(m) => m.stats(),
        }
    }

    /// The directories making up this cgroup (one per v1 hierarchy, or one for v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Manager::V1(m) => m.dirs().into_iter().map(|(_, d)| d).collect(),
            Manager::V2(m) => vec![m.dir()],
        }
    }

    /// For the `cgroup` mount in v1 containers: (hierarchy name, container dir).
    pub fn v1_hierarchies(&self) -> Vec<(String, PathBuf)> {
        match self {
            Manager::V1(m) => m.dirs(),
            Manager::V2(_) => Vec::new(),
        }
    }

    /// Send `sig` to every process in the cgroup.
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        for pid in self.pids()? {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        Ok(())
    }

    /// Remove the cgroup directories. Processes still inside are killed first;
    /// rmdir is retried briefly because the kernel frees exiting tasks asynchronously.
    pub fn destroy(&self) -> Result<()> {
        if self.is_frozen() {
            let _ = self.freeze(false);
        }
        let _ = self.signal_all(nix::sys::signal::Signal::SIGKILL);
        for dir in self.dirs() {
            remove_tree(&dir)?;
        }
        Ok(())
    }
}

/// rmdir a cgroup directory. Child cgroups (made by the container itself) are removed
/// first, but only looked for when the plain rmdir fails: the common case is one syscall.
/// EBUSY is retried briefly because the kernel frees exiting tasks asynchronously.
fn remove_tree(dir: &Path) -> Result<()> {
    let mut delay = std::time::Duration::from_millis(1);
    for attempt in 0..12 {
        let err = match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => e,
        };
        match err.raw_os_error() {
            Some(libc::ENOTEMPTY) | Some(libc::EBUSY) if attempt < 11 => {
                if let Ok(rd) = std::fs::read_dir(dir) {
                    for e in rd.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            remove_tree(&e.path())?;
                        }
                    }
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(100));
            }
            _ => return Err(err).step(|| format!("remove cgroup {}", dir.display())),
        }
    }
    Ok(())
}

/// Write a cgroup control file with an error naming the file and value.
pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).step(|| format!("write {value:?} to {}", p.display()))
}

pub(crate) fn read_file(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

pub(crate) fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read_file(dir, file).and_then(|s| s.parse().ok())
}

/// Parse `key value` lines (memory.stat, cpu.stat, ...).
pub(crate) fn read_kv(dir: &Path, file: &str) -> std::collections::BTreeMap<String, u64> {
    read_file(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Pids listed in `cgroup.procs` of `dir` and every child cgroup.
pub(crate) fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Some(s) = read_file(dir, "cgroup.procs") {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize_path(None, "x").unwrap(), "/skiff/x");
        assert_eq!(
            normalize_path(Some(Path::new("a/b/")), "x").unwrap(),
            "/a/b"
        );
        assert!(normalize_path(Some(Path::new("/a/../b")), "x").is_err());
        assert!(normalize_path(Some(Path::new("system.slice:skiff:x")), "x").is_err());
    }
}
