//! The container's filesystem: mounts from config.json inside the rootfs,
//! pivot_root, then read-only root, masked and read-only paths.

use crate::error::{Context, Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Mount;
use std::path::{Component, Path, PathBuf};

/// Mount propagation modes accepted in options and rootfsPropagation.
pub fn propagation_flag(s: &str) -> Option<MsFlags> {
    Some(match s {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// A parsed mount options list.
#[derive(Debug, PartialEq)]
pub struct Options {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    /// Recursive attributes (`rro`, `rnosuid`, ...) for mount_setattr(AT_RECURSIVE).
    pub recursive: RecursiveAttr,
}

/// MOUNT_ATTR_* bits to set and clear on a mount and every mount below it.
#[derive(Debug, Default, PartialEq, Clone, Copy)]
pub struct RecursiveAttr {
    pub set: u64,
    pub clr: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME: u64 = 0x70; // the atime mode field
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

impl RecursiveAttr {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clr == 0
    }

    /// Apply one `r*` option; false if `opt` is not one.
    fn add(&mut self, opt: &str) -> bool {
        let (set, clr) = match opt {
            "rro" => (MOUNT_ATTR_RDONLY, 0),
            "rrw" => (0, MOUNT_ATTR_RDONLY),
            "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
            "rsuid" => (0, MOUNT_ATTR_NOSUID),
            "rnodev" => (MOUNT_ATTR_NODEV, 0),
            "rdev" => (0, MOUNT_ATTR_NODEV),
            "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
            "rexec" => (0, MOUNT_ATTR_NOEXEC),
            "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
            "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
            "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
            "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
            // The atime mode is one field: the kernel wants it cleared whole to change it.
            // The "no" forms of atime, strictatime and relatime leave the default, relatime.
            "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME),
            "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
            "ratime" | "rrelatime" | "rnorelatime" | "rnostrictatime" => (0, MOUNT_ATTR_ATIME),
            _ => return false,
        };
        if clr & MOUNT_ATTR_ATIME != 0 {
            self.set &= !MOUNT_ATTR_ATIME;
        }
        self.set = (self.set & !clr) | set;
        self.clr = (self.clr & !set) | clr;
        true
    }

    /// mount_setattr(2) on `dest` and every mount below it.
    pub fn apply(&self, dest: &Path) -> nix::Result<()> {
        let c = std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())
            .map_err(|_| nix::errno::Errno::EINVAL)?;
        mount_setattr(
            libc::AT_FDCWD,
            &c,
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            *self,
        )
    }
}

/// mount_setattr(2): set and clear `attr`'s MOUNT_ATTR_* bits on the mount at
/// `dirfd`/`path` (with AT_RECURSIVE, on every mount below it too).
pub fn mount_setattr(
    dirfd: std::os::fd::RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    attr: RecursiveAttr,
) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        set: u64,
        clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let a = MountAttr {
        set: attr.set,
        clr: attr.clr,
        propagation: 0,
        userns_fd: 0,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &a as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

impl Options {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        recursive: RecursiveAttr::default(),
    };
    for opt in opts {
        if o.recursive.add(opt) {
            continue;
        }
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            // Handled by the caller or meaningless here.
            "defaults" | "tmpcopyup" => continue,
            other => {
                if let Some(p) = propagation_flag(other) {
                    o.propagation.push(p);
                } else {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    o
}

/// Join `path` onto `root`, resolving symlinks as if `root` were `/`, so a hostile
/// rootfs cannot redirect a mount outside itself.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut links = 0;
    while let Some(p) = pending.pop() {
        let mut comps = p.components().peekable();
        while let Some(c) = comps.next() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let full = root.join(&candidate);
                    match std::fs::read_link(&full) {
                        Ok(target) if links < 255 => {
                            links += 1;
                            let rest: PathBuf = comps.collect();
                            if target.is_absolute() {
                                resolved = PathBuf::new();
                            }
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    root.join(resolved)
}

fn mkdir_all(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).step(|| format!("create directory {}", p.display()))
}

/// Create the mount point: a file when binding a non-directory, else a directory.
fn ensure_target(dest: &Path, source_is_file: bool) -> Result<()> {
    if source_is_file {
        if let Some(parent) = dest.parent() {
            mkdir_all(parent)?;
        }
        if !dest.exists() {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dest)
                .step(|| format!("create mount point {}", dest.display()))?;
        }
        Ok(())
    } else {
        mkdir_all(dest)
    }
}

/// What `mount_all` needs to know about the container beyond its mounts.
pub struct MountContext<'a> {
    pub rootfs: &'a Path,
    /// v1 hierarchies (name, container cgroup dir) for a `cgroup` mount; empty on v2.
    pub cgroup_v1: &'a [(String, PathBuf)],
    /// Whether the container has its own network namespace (sysfs needs one in a user ns).
    pub in_user_ns: bool,
}

/// Mount every entry of config.json's `mounts` under the rootfs, in order.
pub fn mount_all(mounts: &[Mount], ctx: &MountContext) -> Result<()> {
    for m in mounts {
        mount_one(m, ctx)?;
    }
    Ok(())
}

fn mount_one(m: &Mount, ctx: &MountContext) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.is_bind() { "bind" } else { "none" });
    let dest = secure_join(ctx.rootfs, m.destination());
    if typ == "proc" || typ == "sysfs" {
        // A symlink on the way could put a fresh procfs or sysfs (unmasked) where the
        // container reads it under another name: refused as runc refuses it.
        let lexical = ctx
            .rootfs
            .join(m.destination().strip_prefix("/").unwrap_or(m.destination()));
        if dest != lexical || lexical.is_symlink() {
            return Err(Error::InvalidConfig(format!(
                "{typ} mount at {} must be mounted on ordinary directory",
                m.destination().display()
            )));
        }
    }
    let data = opts.data.join(",");
    let data_opt = if data.is_empty() {
        None
    } else {
        Some(data.as_str())
    };
    let what = |verb: &str| {
        format!(
            "{verb} {} at {}",
            m.source()
                .as_deref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| typ.to_string()),
            dest.display()
        )
    };

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(&dest, &opts, ctx);
    }
    if opts.is_bind() || typ == "bind" {
        let src = m.source().clone().ok_or_else(|| {
            Error::InvalidConfig(format!(
                "bind mount at {} has no source",
                m.destination().display()
            ))
        })?;
        let meta =
            std::fs::metadata(&src).step(|| format!("stat bind source {}", src.display()))?;
        ensure_target(&dest, !meta.is_dir())?;
        let rec = opts.flags & MsFlags::MS_REC;
        mount(
            Some(&src),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .step(|| what("bind mount"))?;
        // Flags other than bind/rec need a remount of the bind.
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount_bind(&dest, extra).step(|| what("remount"))?;
        }
    } else {
        ensure_target(&dest, false)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let res = mount(Some(&src), &dest, Some(typ), opts.flags, data_opt);
        match res {
            // Inside a user namespace without its own netns, sysfs cannot be mounted: bind the host's.
            Err(nix::errno::Errno::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .step(|| what("bind /sys (sysfs refused)"))?;
                let _ = remount_bind(&dest, opts.flags);
            }
            // mqueue cannot be mounted without an ipc namespace owned by our user ns: bind it.
            Err(nix::errno::Errno::EPERM) if typ == "mqueue" && ctx.in_user_ns => {
                mount(
                    Some("/dev/mqueue"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .step(|| what("bind /dev/mqueue"))?;
            }
            r => r.step(|| what("mount"))?,
        }
    }
    if !opts.recursive.is_empty() {
        opts.recursive
            .apply(&dest)
            .step(|| what("set recursive attributes (mount_setattr) of"))?;
    }
    for p in &opts.propagation {
        mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>)
            .step(|| what("set propagation of"))?;
    }
    Ok(())
}

/// Remount a bind mount with `flags`, keeping the flags the kernel locked (nodev,
/// nosuid, noexec, atime in user namespaces) so the remount is not refused.
fn remount_bind(dest: &Path, flags: MsFlags) -> nix::Result<()> {
    let locked = nix::sys::statvfs::statvfs(dest)
        .map(|s| {
            use nix::sys::statvfs::FsFlags;
            let f = s.flags();
            let mut m = MsFlags::empty();
            for (ff, mf) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(ff) {
                    m |= mf;
                }
            }
            m
        })
        .unwrap_or(MsFlags::empty());
    let keep = flags - (MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_BIND);
    mount(
        None::<&str>,
        dest,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | keep | locked,
        None::<&str>,
    )
}

/// cgroup mount: cgroup2 on unified hosts; on v1 a tmpfs holding a bind of the
/// container's own cgroup directory for each hierarchy.
fn mount_cgroup(dest: &Path, opts: &Options, ctx: &MountContext) -> Result<()> {
    ensure_target(dest, false)?;
    let ro = opts.flags & MsFlags::MS_RDONLY;
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    if ctx.cgroup_v1.is_empty() {
        return mount(
            Some("cgroup2"),
            dest,
            Some("cgroup2"),
            base | ro,
            None::<&str>,
        )
        .step(|| format!("mount cgroup2 at {}", dest.display()));
    }
    mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755"))
        .step(|| format!("mount tmpfs for cgroups at {}", dest.display()))?;
    for (name, dir) in ctx.cgroup_v1 {
        let sub = name.strip_prefix("name=").unwrap_or(name);
        let target = dest.join(sub);
        mkdir_all(&target)?;
        if !dir.exists() {
            continue;
        }
        mount(
            Some(dir),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(|| format!("bind cgroup {} at {}", dir.display(), target.display()))?;
        remount_bind(&target, base | ro).step(|| format!("remount cgroup {}", target.display()))?;
        // cpu,cpuacct style hierarchies are reachable under each controller name.
        if sub.contains(',') {
            for c in sub.split(',') {
                let _ = std::os::unix::fs::symlink(sub, dest.join(c));
            }
        }
    }
    if ro.contains(MsFlags::MS_RDONLY) {
        remount_bind(dest, base | ro).step(|| format!("remount {} read-only", dest.display()))?;
    }
    Ok(())
}

/// Make the host's mounts invisible to changes in the container and bind the rootfs onto itself
/// (pivot_root needs the new root to be a mount point).
pub fn prepare_rootfs(rootfs: &Path, propagation: Option<&str>) -> Result<()> {
    let flag = propagation
        .filter(|p| !p.is_empty())
        .and_then(propagation_flag)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    // The root itself must not be shared for pivot_root, so use slave at least.
    let root_flag = if flag.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        flag
    };
    mount(None::<&str>, "/", None::<&str>, root_flag, None::<&str>)
        .step(|| "make / a slave mount")?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .step(|| format!("bind rootfs {} onto itself", rootfs.display()))
}

/// Switch the process root to `rootfs`. pivot_root(".", ".") stacks the old root under the
/// new one, which is then lazily unmounted; with `no_pivot`, MS_MOVE + chroot (for ramfs roots).
pub fn enter_rootfs(rootfs: &Path, no_pivot: bool) -> Result<()> {
    nix::unistd::chdir(rootfs).step(|| format!("chdir to {}", rootfs.display()))?;
    if no_pivot {
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .step(|| "move rootfs to /")?;
        nix::unistd::chroot(".").step(|| "chroot to rootfs")?;
    } else {
        nix::unistd::pivot_root(".", ".").step(|| format!("pivot_root to {}", rootfs.display()))?;
        // The old root is now stacked on "/": keep our changes from reaching the host, then drop it.
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .step(|| "make old root a slave")?;
        umount2(".", MntFlags::MNT_DETACH).step(|| "unmount old root")?;
    }
    nix::unistd::chdir("/").step(|| "chdir to /")
}

/// Enter `rootfs` without a mount namespace of its own: chroot, nothing else changes.
pub fn chroot_into(rootfs: &Path) -> Result<()> {
    nix::unistd::chroot(rootfs).step(|| format!("chroot to {}", rootfs.display()))?;
    nix::unistd::chdir("/").step(|| "chdir to /")
}

/// Detach every mount at or below `rootfs` in this process's mount namespace, deepest
/// first: what a container without a mount namespace of its own left in its caller's.
pub fn unmount_below(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").step(|| "read mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(rootfs))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e).step(|| format!("unmount {}", p.display())),
        }
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Apply rootfsPropagation after entering the new root.
pub fn set_root_propagation(prop: Option<&str>) -> Result<()> {
    if let Some(flag) = prop.filter(|p| !p.is_empty()).and_then(propagation_flag) {
        mount(None::<&str>, "/", None::<&str>, flag, None::<&str>)
            .step(|| format!("set rootfs propagation {}", prop.unwrap_or("")))?;
    }
    Ok(())
}

pub fn readonly_root() -> Result<()> {
    remount_bind(Path::new("/"), MsFlags::MS_RDONLY).step(|| "remount rootfs read-only")
}

/// Hide a path: /dev/null over files, an empty read-only tmpfs over directories.
pub fn mask_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    match std::fs::metadata(path) {
        Err(_) => Ok(()), // nothing there to hide
        Ok(m) if m.is_dir() => mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .step(|| format!("mask {p}")),
        Ok(_) => mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(|| format!("mask {p}")),
    }
}

pub fn readonly_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    if !path.exists() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .step(|| format!("bind {p} for read-only"))?;
    remount_bind(
        path,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
    .step(|| format!("remount {p} read-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "rprivate".into(),
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let b = parse_options(&["rbind".into(), "ro".into()]);
        assert!(b.is_bind() && b.flags.contains(MsFlags::MS_REC | MsFlags::MS_RDONLY));
        let r = parse_options(&[
            "rbind".into(),
            "rro".into(),
            "rnosuid".into(),
            "rnoatime".into(),
        ]);
        assert_eq!(
            r.recursive,
            RecursiveAttr {
                set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME,
                clr: MOUNT_ATTR_ATIME
            }
        );
        assert!(r.data.is_empty(), "recursive options are not fs data");
        let r = parse_options(&[
            "rro".into(),
            "rrw".into(),
            "rstrictatime".into(),
            "ratime".into(),
        ]);
        assert_eq!(
            r.recursive,
            RecursiveAttr {
                set: 0,
                clr: MOUNT_ATTR_RDONLY | MOUNT_ATTR_ATIME
            }
        );
        let rw = parse_options(&["ro".into(), "rw".into()]);
        assert!(!rw.flags.contains(MsFlags::MS_RDONLY), "later option wins");
    }

    #[test]
    fn secure_join_stays_inside() {
        let root = std::env::temp_dir().join(format!("skiff-sj-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("a/up")).unwrap();
        assert_eq!(
            secure_join(&root, Path::new("/a/abs/passwd")),
            root.join("etc/passwd")
        );
        assert_eq!(secure_join(&root, Path::new("/a/up/x")), root.join("x"));
        assert_eq!(secure_join(&root, Path::new("/../../b")), root.join("b"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
