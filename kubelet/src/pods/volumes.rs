//! Pod volumes on the node, under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>` as the
//! kubelet lays them out: emptyDir (a directory, or tmpfs for medium Memory), hostPath
//! (with its type checks), configMap and secret (files written atomically, secrets on
//! tmpfs), and the CRI mounts of each container's volumeMounts.

use super::sources::Sources;
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};
use skiff_cri::v1;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?}: {1} volumes are not supported")]
    Unsupported(String, &'static str),
    #[error("volume {0:?}: {1} {2:?} not found")]
    Missing(String, &'static str, String),
    #[error("volume {0:?}: key {1:?} not found in {2} {3:?}")]
    MissingKey(String, String, &'static str, String),
    #[error("volume {0:?}: hostPath {1}: {2}")]
    HostPath(String, String, String),
    #[error("volume {0:?}: path {1:?} must be relative and must not contain '..'")]
    BadPath(String, String),
    #[error("volumeMount {0:?}: no volume of that name")]
    NoVolume(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |e| VolumeError::Io(what.to_string(), e)
}

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// A path inside a volume: relative, no "..".
fn safe_relative(vol: &str, p: &str) -> Result<PathBuf, VolumeError> {
    let path = Path::new(p);
    if p.is_empty()
        || !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(VolumeError::BadPath(vol.into(), p.into()));
    }
    Ok(path.to_path_buf())
}

fn is_tmpfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn mount_tmpfs(p: &Path, mode: &str) -> Result<(), VolumeError> {
    if is_tmpfs(p) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        p,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(mode),
    )
    .map_err(|e| VolumeError::Io(format!("mount tmpfs on {}", p.display()), e.into()))
}

/// Write `files` (relative path → bytes, mode) into `dir`, each atomically, and remove
/// files that are no longer wanted. Unchanged files are left alone.
fn write_files(dir: &Path, files: &BTreeMap<PathBuf, (Vec<u8>, u32)>) -> Result<(), VolumeError> {
    for (rel, (data, mode)) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent.display()))?;
        }
        let same = std::fs::read(&p).is_ok_and(|d| d == *data)
            && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode);
        if same {
            continue;
        }
        let tmp = p.with_file_name(format!(
            ".{}.tmp",
            p.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        std::fs::write(&tmp, data).map_err(io(tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))
            .map_err(io(tmp.display()))?;
        std::fs::rename(&tmp, &p).map_err(io(p.display()))?;
    }
    // Stale top-level entries (a key removed from the ConfigMap).
    for e in std::fs::read_dir(dir).map_err(io(dir.display()))?.flatten() {
        let name = PathBuf::from(e.file_name());
        if !files.keys().any(|k| k.starts_with(&name)) {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    Ok(())
}

/// The files of a configMap or secret volume.
fn projected_files(
    vol: &str,
    kind: &'static str,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<BTreeMap<PathBuf, (Vec<u8>, u32)>, VolumeError> {
    let mode = default_mode.unwrap_or(0o644) as u32 & 0o777;
    let mut out = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(d) => {
                        let m = it.mode.map_or(mode, |m| m as u32 & 0o777);
                        out.insert(safe_relative(vol, &it.path)?, (d.clone(), m));
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingKey(
                            vol.into(),
                            it.key.clone(),
                            kind,
                            name.into(),
                        ))
                    }
                }
            }
        }
        _ => {
            for (k, d) in data {
                out.insert(safe_relative(vol, k)?, (d.clone(), mode));
            }
        }
    }
    Ok(out)
}

fn host_path(vol: &str, path: &str, type_: Option<&str>) -> Result<PathBuf, VolumeError> {
    let p = PathBuf::from(path);
    let err = |m: &str| VolumeError::HostPath(vol.into(), path.into(), m.into());
    let meta = std::fs::metadata(&p);
    match type_.unwrap_or("") {
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(&p).map_err(io(p.display()))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(p.display()))?;
            } else if !p.is_dir() {
                return Err(err("exists and is not a directory"));
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).map_err(io(d.display()))?;
                }
                std::fs::write(&p, b"").map_err(io(p.display()))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
                    .map_err(io(p.display()))?;
            } else if !p.is_file() {
                return Err(err("exists and is not a file"));
            }
        }
        t => {
            let m = meta.map_err(|_| err("does not exist"))?;
            let ft = m.file_type();
            let ok = match t {
                "Directory" => ft.is_dir(),
                "File" => ft.is_file(),
                "Socket" => ft.is_socket(),
                "CharDevice" => ft.is_char_device(),
                "BlockDevice" => ft.is_block_device(),
                _ => return Err(err(&format!("unknown hostPath type {t:?}"))),
            };
            if !ok {
                return Err(err(&format!("is not a {t}")));
            }
        }
    }
    Ok(p)
}

fn prepare_one(dir: &Path, v: &Volume, sources: &Sources) -> Result<PathBuf, VolumeError> {
    let vol = v.name.as_str();
    let plugin = |name: &str| dir.join("volumes").join(name).join(vol);
    if let Some(e) = &v.empty_dir {
        let p = plugin("kubernetes.io~empty-dir");
        std::fs::create_dir_all(&p).map_err(io(p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
            .map_err(io(p.display()))?;
        if e.medium.as_deref() == Some("Memory") {
            mount_tmpfs(&p, "mode=0777")?;
        }
        return Ok(p);
    }
    if let Some(h) = &v.host_path {
        return host_path(vol, &h.path, h.type_.as_deref());
    }
    if let Some(cm) = &v.config_map {
        let p = plugin("kubernetes.io~configmap");
        std::fs::create_dir_all(&p).map_err(io(p.display()))?;
        let optional = cm.optional == Some(true);
        let empty = BTreeMap::new();
        let data = match sources.config_maps.get(&cm.name) {
            Some(d) => d,
            None if optional => &empty,
            None => {
                return Err(VolumeError::Missing(
                    vol.into(),
                    "configmap",
                    cm.name.clone(),
                ))
            }
        };
        let files = projected_files(
            vol,
            "ConfigMap",
            &cm.name,
            data,
            cm.items.as_ref(),
            cm.default_mode,
            optional,
        )?;
        write_files(&p, &files)?;
        return Ok(p);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let p = plugin("kubernetes.io~secret");
        std::fs::create_dir_all(&p).map_err(io(p.display()))?;
        // Secrets never touch the node's disk.
        mount_tmpfs(&p, "mode=0755")?;
        let optional = s.optional == Some(true);
        let empty = BTreeMap::new();
        let data = match sources.secrets.get(&name) {
            Some(d) => d,
            None if optional => &empty,
            None => return Err(VolumeError::Missing(vol.into(), "secret", name)),
        };
        let files = projected_files(
            vol,
            "Secret",
            &name,
            data,
            s.items.as_ref(),
            s.default_mode,
            optional,
        )?;
        write_files(&p, &files)?;
        return Ok(p);
    }
    let kind = if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.projected.is_some() {
        "projected"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else {
        "this kind of"
    };
    Err(VolumeError::Unsupported(vol.into(), kind))
}

/// Make every volume of the pod ready; volume name → host path.
pub fn prepare(
    root: &Path,
    pod: &Pod,
    sources: &Sources,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let dir = pod_dir(root, super::cri_config::pod_uid(pod));
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        out.insert(v.name.clone(), prepare_one(&dir, v, sources)?);
    }
    Ok(out)
}

/// A container's volumeMounts as CRI mounts.
pub fn mounts(
    c: &Container,
    vols: &HashMap<String, PathBuf>,
) -> Result<Vec<v1::Mount>, VolumeError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = vols
            .get(&m.name)
            .ok_or_else(|| VolumeError::NoVolume(m.name.clone()))?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = base.join(safe_relative(&m.name, sub)?);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(io(p.display()))?;
                }
                p
            }
            None => base.clone(),
        };
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => v1::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => v1::MountPropagation::PropagationBidirectional,
            _ => v1::MountPropagation::PropagationPrivate,
        };
        out.push(v1::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only == Some(true),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Unmount and remove everything of a pod's volumes (the pod is gone).
pub fn cleanup(root: &Path, uid: &str) -> Result<(), VolumeError> {
    let dir = pod_dir(root, uid);
    if !dir.exists() {
        return Ok(());
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read mountinfo"))?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| VolumeError::Io(format!("unmount {}", p.display()), e.into()))?;
    }
    std::fs::remove_dir_all(&dir).map_err(io(dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_files_with_items_modes_and_stale_removal() {
        let root = std::env::temp_dir().join(format!("skiff-vol-{}", std::process::id()));
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                {"name": "scratch", "mountPath": "/data", "subPath": "sub"}
            ]}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "m", "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o600}]}},
                {"name": "all", "configMap": {"name": "m", "defaultMode": 0o640}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "nope", "configMap": {"name": "absent", "optional": true}}
            ]}
        }))
        .unwrap();
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "m".into(),
            BTreeMap::from([("a".into(), b"A".to_vec()), ("b".into(), b"B".to_vec())]),
        );
        let vols = prepare(&root, &pod, &sources).unwrap();
        let cfg = &vols["cfg"];
        assert_eq!(std::fs::read(cfg.join("dir/a.txt")).unwrap(), b"A");
        assert!(!cfg.join("b").exists());
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(cfg.join("dir/a.txt")), 0o600);
        assert_eq!(mode(vols["all"].join("b")), 0o640);
        // Update: b changes, a goes.
        sources
            .config_maps
            .insert("m".into(), BTreeMap::from([("b".into(), b"B2".to_vec())]));
        let mut pod2 = pod.clone();
        pod2.spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .remove(0);
        let vols = prepare(&root, &pod2, &sources).unwrap();
        assert_eq!(std::fs::read(vols["all"].join("b")).unwrap(), b"B2");
        assert!(!vols["all"].join("a").exists());
        // Mounts: subPath made inside the emptyDir, read-only carried.
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let vols = prepare(&root, &pod, &{
            let mut s = Sources::default();
            s.config_maps
                .insert("m".into(), BTreeMap::from([("a".into(), b"A".to_vec())]));
            s
        })
        .unwrap();
        let ms = mounts(c, &vols).unwrap();
        assert!(ms[0].readonly && ms[0].container_path == "/etc/cfg");
        assert!(ms[1]
            .host_path
            .ends_with("kubernetes.io~empty-dir/scratch/sub"));
        assert!(Path::new(&ms[1].host_path).is_dir());
        // A required ConfigMap that is missing, and a path escaping the volume.
        let e = prepare(&root, &pod, &Sources::default()).unwrap_err();
        assert!(e.to_string().contains("configmap \"m\" not found"), "{e}");
        assert!(safe_relative("v", "../x").is_err() && safe_relative("v", "/abs").is_err());
        cleanup(&root, "u1").unwrap();
        assert!(!pod_dir(&root, "u1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn host_path_types() {
        let d = std::env::temp_dir().join(format!("skiff-hp-{}", std::process::id()));
        let p = d.join("made").display().to_string();
        host_path("v", &p, Some("DirectoryOrCreate")).unwrap();
        assert!(Path::new(&p).is_dir());
        let f = d.join("f").display().to_string();
        host_path("v", &f, Some("FileOrCreate")).unwrap();
        assert!(host_path("v", &f, Some("Directory"))
            .unwrap_err()
            .to_string()
            .contains("is not a Directory"));
        assert!(host_path("v", &d.join("none").display().to_string(), Some("File")).is_err());
        host_path("v", "/nonexistent-any", None).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
