//! Protection of the runtime binary from the containers it starts (CVE-2019-5736).
//!
//! Every process that enters a container is a fork of the runtime, so until its final
//! execve its `/proc/PID/exe` is the runtime's binary; a container that execs
//! `#!/proc/self/exe` even runs it. A container process able to open that link could
//! reopen it for writing once the runtime exits and replace the host's binary. So the
//! runtime first re-executes itself from a file nobody can write:
//!
//! - the binary through a read-only bind mount of the file alone, attached to no mount
//!   namespace (three syscalls, no copy), or, where that is refused,
//! - a sealed memfd copy (F_SEAL_SEAL|SHRINK|GROW|WRITE), runc's older scheme.
//!
//! A process whose executable is already on a read-only mount or a sealed memfd is left
//! alone, so children spawned through `/proc/self/exe` pay nothing.

use crate::error::{Context, Error, Result};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Set across the re-exec so that a copy which still is not protected fails instead of
/// re-executing for ever.
const MARKER: &str = "_SKIFF_EXESEAL";

/// How the running binary is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// On a read-only mount: writes through any path to it fail with EROFS.
    ReadOnlyMount,
    /// A memfd sealed against every write.
    SealedMemfd,
}

const FULL_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// How `f` (an open executable) is protected from writes, if it is.
pub fn protection(f: &File) -> Option<Protection> {
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & FULL_SEALS == FULL_SEALS {
        return Some(Protection::SealedMemfd);
    }
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) } == 0 && st.f_flag & libc::ST_RDONLY != 0 {
        return Some(Protection::ReadOnlyMount);
    }
    None
}

/// How the running binary is protected, if it is.
pub fn current() -> Result<Option<Protection>> {
    let exe = File::open("/proc/self/exe").step(|| "open /proc/self/exe")?;
    Ok(protection(&exe))
}

/// Make sure this process runs from a protected binary: return at once if it does,
/// otherwise re-execute it (same arguments and environment) from a protected one.
/// Call it first thing in `main`, before any thread is started.
pub fn ensure() -> Result<Protection> {
    let again = std::env::var_os(MARKER).is_some();
    if again {
        // Not for hooks or anything else this process starts.
        std::env::remove_var(MARKER);
    }
    if let Some(p) = current()? {
        return Ok(p);
    }
    if again {
        return Err(Error::Init(
            "re-executed the runtime from a protected copy, but it is still writable".into(),
        ));
    }
    let fd = match readonly_bind() {
        Ok(fd) => fd,
        Err(_) => sealed_copy()?,
    };
    reexec(&fd)
}

/// The running binary through a read-only bind mount of the file alone, attached to no
/// namespace: only this fd (and later the process's exe) keeps it alive, and nothing in
/// a container can reach it to remount it writable.
fn readonly_bind() -> Result<OwnedFd> {
    let path = std::fs::read_link("/proc/self/exe").step(|| "read /proc/self/exe")?;
    if !path.exists() {
        return Err(Error::Unsupported(format!(
            "{} is no longer on disk",
            path.display()
        )));
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Unsupported("NUL in the binary's path".into()))?;
    // OPEN_TREE_CLONE: a detached copy of the mount, rooted at the file.
    let tree = sys_fd(
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c.as_ptr(),
                1 | libc::O_CLOEXEC as libc::c_uint,
            )
        },
        "open_tree (clone) of the runtime binary",
    )?;
    let ro = crate::mounts::RecursiveAttr {
        set: 0x1 | 0x2 | 0x4, // MOUNT_ATTR_RDONLY | NOSUID | NODEV
        clr: 0,
    };
    crate::mounts::mount_setattr(tree.as_raw_fd(), c"", libc::AT_EMPTY_PATH, ro)
        .step(|| "make the binary's bind mount read-only")?;
    Ok(tree)
}

fn sys_fd(r: i64, step: &str) -> Result<OwnedFd> {
    let r = nix::errno::Errno::result(r).step(|| step.to_string())?;
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A copy of the running binary in a memfd, sealed against every change.
fn sealed_copy() -> Result<OwnedFd> {
    let mut src = File::open("/proc/self/exe").step(|| "open /proc/self/exe")?;
    sealed_memfd(c"skiff-runtime", &mut src)
}

/// `content` in a memfd sealed against every change (close-on-exec; execveat runs it).
fn sealed_memfd(name: &std::ffi::CStr, content: &mut impl std::io::Read) -> Result<OwnedFd> {
    let fd = sys_fd(
        unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) as i64
        },
        "memfd_create",
    )?;
    let mut dst = File::from(fd);
    std::io::copy(content, &mut dst).step(|| "fill a sealed memfd")?;
    let fd = OwnedFd::from(dst);
    nix::errno::Errno::result(unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, FULL_SEALS)
    })
    .step(|| "seal the memfd")?;
    Ok(fd)
}

#[cfg(skiff_exec_stub)]
const EXEC_STUB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/skiff-exec"));

/// Whether this build has the exec stub (x86_64 Linux): then a process entering a
/// container needs no protected copy of the runtime (see `exec_stub`).
pub const HAS_EXEC_STUB: bool = cfg!(skiff_exec_stub);

/// skiff-exec (runtime/stub/exec_stub.rs, ~2 KB, static) in a sealed memfd. A container's
/// process is started through it, so at its final execve `/proc/self/exe` is this sealed
/// copy, not the runtime binary: an image whose program is `#!/proc/self/exe` runs the
/// stub, which refuses it. Until then the runtime's child is not dumpable, so nothing
/// in a container can open its /proc entries. None where the stub is not built.
pub fn exec_stub() -> Result<Option<OwnedFd>> {
    #[cfg(skiff_exec_stub)]
    {
        sealed_memfd(c"skiff-exec", &mut &EXEC_STUB[..]).map(Some)
    }
    #[cfg(not(skiff_exec_stub))]
    {
        Ok(None)
    }
}

fn reexec(fd: &OwnedFd) -> Result<Protection> {
    let cstr = |s: OsString| CString::new(s.as_bytes()).ok();
    let argv: Vec<CString> = std::env::args_os().filter_map(cstr).collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(kv)
        })
        .collect();
    envp.push(CString::new(format!("{MARKER}=1")).expect("no NUL"));
    let mut av: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    av.push(std::ptr::null());
    let mut ev: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    ev.push(std::ptr::null());
    let r = unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            av.as_ptr(),
            ev.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(Error::Sys {
        step: "re-execute the runtime from its protected copy".into(),
        errno: nix::errno::Errno::from_raw(if r < 0 {
            nix::errno::Errno::last_raw()
        } else {
            0
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_is_recognised() {
        let fd = sys_fd(
            unsafe {
                libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
                    as i64
            },
            "memfd",
        )
        .unwrap();
        let f = File::from(fd);
        assert_eq!(protection(&f), None, "an unsealed memfd is writable");
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, FULL_SEALS) };
        assert_eq!(r, 0);
        assert_eq!(protection(&f), Some(Protection::SealedMemfd));
    }

    #[test]
    fn a_plain_file_is_not_protected() {
        let dir = std::env::temp_dir().join(format!("exeseal-{}", std::process::id()));
        std::fs::write(&dir, b"x").unwrap();
        let f = File::open(&dir).unwrap();
        let p = protection(&f);
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(p, None);
    }
}
