//! Which namespaces a container gets: new ones (unshare/clone) or existing ones joined by path.

use crate::error::{Context, Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use std::fs::File;
use std::os::fd::AsFd;

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Name of the namespace file under /proc/<pid>/ns.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

/// Namespace work for one container, prepared in the parent so bad paths fail early.
#[derive(Debug)]
pub struct Plan {
    /// Namespaces to join, user namespace first.
    pub join: Vec<(LinuxNamespaceType, File)>,
    /// Namespaces to create, except the user namespace.
    pub unshare: CloneFlags,
    pub new_user: bool,
    /// pid and time namespaces only apply to children: init must be forked after setns/unshare.
    pub fork_init: bool,
    pub types: Vec<LinuxNamespaceType>,
}

impl Plan {
    pub fn new(list: &[LinuxNamespace]) -> Result<Plan> {
        let mut p = Plan {
            join: Vec::new(),
            unshare: CloneFlags::empty(),
            new_user: false,
            fork_init: false,
            types: Vec::new(),
        };
        for ns in list {
            let t = ns.typ();
            p.types.push(t);
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    let f = File::open(path)
                        .step(|| format!("open {} namespace {}", proc_name(t), path.display()))?;
                    p.join.push((t, f));
                }
                _ if t == LinuxNamespaceType::User => p.new_user = true,
                _ => p.unshare |= flag(t),
            }
            if matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
                p.fork_init = true;
            }
        }
        p.join.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
        Ok(p)
    }

    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.types.contains(&t)
    }

    /// Join the namespaces given by path (runs in the child).
    pub fn join_all(&self) -> Result<()> {
        for (t, f) in &self.join {
            nix::sched::setns(f.as_fd(), flag(*t))
                .step(|| format!("join {} namespace", proc_name(*t)))?;
        }
        Ok(())
    }
}

/// Write uid_map/gid_map for a child that created a new user namespace.
pub fn write_id_maps(
    pid: i32,
    uid: &[oci_spec::runtime::LinuxIdMapping],
    gid: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    let fmt = |m: &[oci_spec::runtime::LinuxIdMapping]| {
        m.iter()
            .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
            .collect::<String>()
    };
    if uid.is_empty() || gid.is_empty() {
        return Err(Error::InvalidConfig(
            "user namespace without id mappings".into(),
        ));
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), fmt(uid))
        .step(|| format!("write uid_map of {pid}"))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), fmt(gid))
        .step(|| format!("write gid_map of {pid}"))
}
