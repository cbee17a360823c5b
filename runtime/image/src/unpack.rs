//! Applying a layer tarball to a directory. Two modes: `Overlay` keeps the layer on its
//! own (an overlayfs lower dir): whiteouts become 0:0 character devices and opaque
//! markers the `trusted.overlay.opaque` xattr; `Flatten` applies the layer onto the
//! layers below it in one directory, deleting what whiteouts name.

use crate::error::{Context, Error, Result};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Overlay,
    Flatten,
}

const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Reject absolute paths and `..` so an entry cannot land outside `dest`.
fn safe_rel(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidConfig(format!(
                    "layer entry {} escapes the layer",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Apply one (uncompressed or gzip) layer stream to `dest`.
pub fn apply_layer(reader: impl Read, dest: &Path, mode: Mode) -> Result<()> {
    let mut buf = std::io::BufReader::new(reader);
    let head = {
        use std::io::BufRead;
        buf.fill_buf()
            .step(|| "read layer")?
            .get(..2)
            .map(|h| h.to_vec())
            .unwrap_or_default()
    };
    let stream: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let mut ar = tar::Archive::new(stream);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    std::fs::create_dir_all(dest).step(|| format!("create {}", dest.display()))?;
    for entry in ar.entries().step(|| "read layer entries")? {
        let mut e = entry.step(|| "read layer entry")?;
        let path = e.path().step(|| "layer entry path")?.into_owned();
        let rel = safe_rel(&path)?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == WH_OPAQUE {
            let dir = dest.join(&parent);
            std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
            match mode {
                Mode::Overlay => set_opaque(&dir)?,
                Mode::Flatten => {
                    for c in std::fs::read_dir(&dir)
                        .step(|| format!("read {}", dir.display()))?
                        .flatten()
                    {
                        remove_any(&c.path());
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
            let target = dest.join(&parent).join(hidden);
            remove_any(&target);
            if mode == Mode::Overlay {
                std::fs::create_dir_all(dest.join(&parent)).ok();
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .step(|| format!("whiteout {}", target.display()))?;
            }
            continue;
        }
        // A later entry replaces an earlier file of another type (dir over file, ...).
        let target = dest.join(&rel);
        if let (Ok(m), tar::EntryType::Directory) =
            (std::fs::symlink_metadata(&target), e.header().entry_type())
        {
            if !m.is_dir() {
                remove_any(&target);
            }
        } else if e.header().entry_type() != tar::EntryType::Directory {
            if let Ok(m) = std::fs::symlink_metadata(&target) {
                if m.is_dir() {
                    remove_any(&target);
                }
            }
        }
        e.unpack_in(dest)
            .step(|| format!("unpack {}", rel.display()))?;
    }
    Ok(())
}

fn set_opaque(dir: &Path) -> Result<()> {
    let p = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidConfig("path with NUL".into()))?;
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    nix::errno::Errno::result(r)
        .map(drop)
        .step(|| format!("mark {} opaque", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn flatten_applies_whiteouts_and_opaque_dirs() {
        let d = std::env::temp_dir().join(format!("skiff-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let l1 = layer(&[
            ("etc/", None),
            ("etc/a", Some(b"1")),
            ("etc/b", Some(b"2")),
            ("var/", None),
            ("var/x", Some(b"x")),
        ]);
        let l2 = layer(&[
            ("etc/.wh.a", Some(b"")),
            ("var/.wh..wh..opq", Some(b"")),
            ("var/y", Some(b"y")),
        ]);
        apply_layer(&l1[..], &d, Mode::Flatten).unwrap();
        apply_layer(&l2[..], &d, Mode::Flatten).unwrap();
        assert!(!d.join("etc/a").exists(), "whiteout deleted etc/a");
        assert_eq!(std::fs::read(d.join("etc/b")).unwrap(), b"2");
        assert!(!d.join("var/x").exists(), "opaque dir hid var/x");
        assert_eq!(std::fs::read(d.join("var/y")).unwrap(), b"y");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn escaping_entries_are_refused() {
        assert!(safe_rel(Path::new("../etc/passwd")).is_err());
        assert_eq!(safe_rel(Path::new("/a/./b")).unwrap(), PathBuf::from("a/b"));
    }
}
