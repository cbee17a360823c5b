//! Container state kept under the runtime root: `<root>/<id>/state.json`,
//! guarded by an flock on `<root>/<id>/.lock` so concurrent commands on one id serialize.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const FIFO_FILE: &str = "exec.fifo";
const LOCK_FILE: &str = ".lock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What the runtime remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of `pid` (clock ticks since boot, /proc/pid/stat field 22): guards against pid reuse.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    /// Set once `start` ran (the exec fifo is gone).
    pub started: bool,
    /// Cgroup path relative to each hierarchy root.
    pub cgroup_path: String,
    pub annotations: HashMap<String, String>,
    pub config: Spec,
}

/// Read field 22 (starttime) and field 3 (state) of /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parens: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ContainerState {
    /// Is the init process still the one we started, and not a zombie?
    pub fn init_alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some((st, start)) => start == self.pid_start && st != 'Z' && st != 'X',
            None => false,
        }
    }

    /// The current status, derived from the process and the cgroup freezer.
    pub fn status(&self, dir: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if !self.started && dir.join(FIFO_FILE).exists() {
            return Status::Created;
        }
        if crate::cgroups::Manager::open(&self.cgroup_path)
            .map(|m| m.is_frozen())
            .unwrap_or(false)
        {
            return Status::Paused;
        }
        Status::Running
    }

    /// The OCI state document (plus the fields runc adds, which go-runc reads).
    pub fn oci_json(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        let mut v = serde_json::json!({
            "ociVersion": crate::config_json::OCI_VERSION,
            "id": self.id,
            "pid": pid,
            "status": status.to_string(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&self.annotations).unwrap_or_default();
        }
        v
    }
}

/// Validate a container id: the characters runc allows, no path tricks.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!("invalid container id {id:?}")))
    }
}

/// The runtime's state root (`--root`).
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

/// An exclusive lock on one container's directory; released on drop.
pub struct Lock {
    file: File,
}

impl Lock {
    /// The lock's fd: a forked child must close it, or it would hold the lock on.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&path)
            .step(|| format!("create state root {}", path.display()))?;
        Ok(Root { path })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Lock the container's directory, creating it when `create` is set.
    pub fn lock(&self, id: &str, create: bool) -> Result<Lock> {
        check_id(id)?;
        let dir = self.dir(id);
        if create {
            match fs::DirBuilder::new().mode(0o711).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::Exists(id.to_string()))
                }
                Err(e) => return Err(e).step(|| format!("create {}", dir.display())),
            }
        } else if !dir.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join(LOCK_FILE))
            .step(|| format!("open lock of container {id}"))?;
        nix::errno::Errno::result(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) })
            .step(|| format!("lock container {id}"))?;
        Ok(Lock { file })
    }

    pub fn load(&self, id: &str) -> Result<ContainerState> {
        let path = self.dir(id).join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).step(|| format!("read {}", path.display())),
        };
        serde_json::from_str(&text)
            .map_err(|e| Error::InvalidConfig(format!("corrupt state {}: {e}", path.display())))
    }

    /// Write state atomically (temp file + rename) so a crash never leaves half a file.
    pub fn save(&self, st: &ContainerState) -> Result<()> {
        let dir = self.dir(&st.id);
        let tmp = dir.join(".state.json.tmp");
        let data = serde_json::to_vec(st).expect("state serializes");
        fs::write(&tmp, data).step(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(STATE_FILE)).step(|| format!("save state of {}", st.id))
    }

    /// Ids of all containers with a state file.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.path).step(|| format!("read {}", self.path.display()))? {
            let e = e.step(|| "read state root entry")?;
            if e.path().join(STATE_FILE).exists() {
                ids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).step(|| format!("remove {}", dir.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("abc-1_2.3+x").is_ok());
        for bad in ["", "..", "a/b", "a b", "."] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_stat_parses() {
        let (st, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(st == 'R' || st == 'S', "{st}");
        assert!(start > 0);
    }
}
