//! Device nodes in the container's /dev: the defaults every container gets and
//! `linux.devices`. In a user namespace mknod is refused, so host nodes are bind-mounted.

use crate::error::{Context, Result};
use crate::mounts::secure_join;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::os::unix::fs::symlink;
use std::path::Path;

pub struct Node {
    pub path: String,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

pub fn defaults() -> Vec<Node> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(n, major, minor)| Node {
        path: format!("/dev/{n}"),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: None,
        gid: None,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Node {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    Node {
        path: d.path().to_string_lossy().into_owned(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid(),
        gid: d.gid(),
    }
}

pub fn create(rootfs: &Path, nodes: &[Node], bind: bool) -> Result<()> {
    for n in nodes {
        let dest = secure_join(rootfs, Path::new(&n.path));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).step(|| format!("create {}", parent.display()))?;
        }
        if bind {
            if !dest.exists() {
                std::fs::File::create(&dest).step(|| format!("create {}", dest.display()))?;
            }
            mount(
                Some(n.path.as_str()),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .step(|| format!("bind device {} at {}", n.path, dest.display()))?;
            continue;
        }
        let _ = std::fs::remove_file(&dest);
        mknod(
            &dest,
            n.kind,
            Mode::from_bits_truncate(n.mode),
            makedev(n.major, n.minor),
        )
        .step(|| format!("mknod {} ({}:{})", dest.display(), n.major, n.minor))?;
        // mknod is subject to the umask: set the mode exactly.
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(n.mode))
            .step(|| format!("chmod {}", dest.display()))?;
        if n.uid.is_some() || n.gid.is_some() {
            nix::unistd::chown(
                &dest,
                n.uid.map(nix::unistd::Uid::from_raw),
                n.gid.map(nix::unistd::Gid::from_raw),
            )
            .step(|| format!("chown {}", dest.display()))?;
        }
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/ptmx (→ pts/ptmx) and /dev/core where /proc/kcore exists.
pub fn symlinks(rootfs: &Path) -> Result<()> {
    let dev = rootfs.join("dev");
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let p = dev.join(name);
        if name == "ptmx" {
            let _ = std::fs::remove_file(&p);
        }
        match symlink(target, &p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).step(|| format!("symlink {} -> {target}", p.display())),
        }
    }
    Ok(())
}
