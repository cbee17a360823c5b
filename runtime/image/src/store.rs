//! The content-addressed store and image references.

use super::{unpack, ImageConfig};
use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    pub name: String,
    /// Manifest digest ("sha256:…").
    pub digest: String,
    /// Config digest: the image id.
    pub id: String,
    pub size: u64,
}

pub struct Store {
    root: PathBuf,
}

/// The OCI/Go name of the architecture we run on.
pub(super) fn native_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// The linux/<native arch> entry of an image index (an entry without platform matches).
pub(super) fn pick_platform(index: &Value) -> Option<&Value> {
    index["manifests"].as_array()?.iter().find(|m| {
        m["platform"].is_null()
            || (m["platform"]["os"] == "linux" && m["platform"]["architecture"] == native_arch())
    })
}

fn hex_of(digest: &str) -> Result<&str> {
    let h = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::InvalidConfig(format!("unsupported digest {digest:?} (sha256 only)"))
    })?;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidConfig(format!("malformed digest {digest:?}")));
    }
    Ok(h)
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in ["blobs/sha256", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(d))
                .step(|| format!("create {}", root.join(d).display()))?;
        }
        Ok(Store { root })
    }

    fn lock(&self) -> Result<std::fs::File> {
        let f = std::fs::File::create(self.root.join("lock")).step(|| "open image store lock")?;
        nix::errno::Errno::result(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) })
            .step(|| "lock image store")?;
        Ok(f)
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// Write a blob, verifying its sha256 against `expected` (when given) before it
    /// becomes visible. Returns its digest.
    pub fn put_blob(&self, expected: Option<&str>, mut data: impl Read) -> Result<String> {
        if let Some(e) = expected {
            if self.blob_path(e)?.exists() {
                return Ok(e.to_string());
            }
        }
        let tmp = self.root.join("tmp").join(format!(
            "blob-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = std::fs::File::create(&tmp).step(|| format!("create {}", tmp.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = data.read(&mut buf).step(|| "read blob")?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).step(|| "write blob")?;
        }
        f.sync_all().step(|| "sync blob")?;
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        if let Some(e) = expected {
            if e != digest {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::InvalidConfig(format!(
                    "blob digest mismatch: expected {e}, got {digest}"
                )));
            }
        }
        std::fs::rename(&tmp, self.blob_path(&digest)?).step(|| "store blob")?;
        Ok(digest)
    }

    pub fn read_json(&self, digest: &str) -> Result<Value> {
        let p = self.blob_path(digest)?;
        let text = std::fs::read(&p).map_err(|_| Error::NotFound(format!("blob {digest}")))?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::InvalidConfig(format!("blob {digest} is not JSON: {e}")))
    }

    fn refs(&self) -> BTreeMap<String, String> {
        std::fs::read(self.root.join("refs.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_refs(&self, refs: &BTreeMap<String, String>) -> Result<()> {
        let tmp = self.root.join("refs.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(refs).expect("serializes"))
            .step(|| "write refs")?;
        std::fs::rename(&tmp, self.root.join("refs.json")).step(|| "save refs")
    }

    pub fn tag(&self, name: &str, manifest: &str) -> Result<()> {
        let _l = self.lock()?;
        let mut refs = self.refs();
        refs.insert(name.to_string(), manifest.to_string());
        self.save_refs(&refs)
    }

    /// Pick the linux/amd64 manifest out of an index (or take a manifest as is).
    fn pick_manifest(&self, digest: &str) -> Result<String> {
        let v = self.read_json(digest)?;
        let media = v["mediaType"].as_str().unwrap_or("");
        if media == super::MEDIA_INDEX
            || media == super::DOCKER_LIST
            || v.get("manifests").is_some()
        {
            let m = pick_platform(&v).ok_or_else(|| {
                Error::NotFound(format!("no linux/{} manifest in {digest}", native_arch()))
            })?;
            return self.pick_manifest(m["digest"].as_str().unwrap_or(""));
        }
        Ok(digest.to_string())
    }

    /// Import an OCI image layout tarball (as `skopeo copy … oci-archive:` or the busybox
    /// script write it) or a `docker save` archive. Returns the names imported.
    pub fn import_archive(
        &self,
        archive: &Path,
        default_name: Option<&str>,
    ) -> Result<Vec<String>> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).step(|| "create import dir")?;
        let res = (|| {
            let f = std::fs::File::open(archive).step(|| format!("open {}", archive.display()))?;
            tar::Archive::new(f)
                .unpack(&tmp)
                .step(|| format!("unpack {}", archive.display()))?;
            if tmp.join("index.json").exists() {
                self.import_layout(&tmp, default_name)
            } else if tmp.join("manifest.json").exists() {
                self.import_docker(&tmp)
            } else {
                Err(Error::InvalidConfig(format!(
                    "{} is neither an OCI layout nor a docker archive",
                    archive.display()
                )))
            }
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        res
    }

    fn import_layout(&self, dir: &Path, default_name: Option<&str>) -> Result<Vec<String>> {
        let blobs = dir.join("blobs/sha256");
        for e in std::fs::read_dir(&blobs)
            .step(|| "read layout blobs")?
            .flatten()
        {
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            let f = std::fs::File::open(e.path()).step(|| "open layout blob")?;
            self.put_blob(Some(&digest), f)?;
        }
        let index: Value = serde_json::from_slice(
            &std::fs::read(dir.join("index.json")).step(|| "read index.json")?,
        )
        .map_err(|e| Error::InvalidConfig(format!("index.json: {e}")))?;
        let mut names = Vec::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let digest = m["digest"]
                .as_str()
                .ok_or_else(|| Error::InvalidConfig("index entry without digest".into()))?;
            let manifest = self.pick_manifest(digest)?;
            self.check_complete(&manifest)?;
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .map(str::to_string)
                .or_else(|| default_name.map(str::to_string))
                .or_else(|| {
                    ann["org.opencontainers.image.ref.name"]
                        .as_str()
                        .map(|t| format!("localhost/image:{t}"))
                })
                .unwrap_or_else(|| manifest.clone());
            self.tag(&name, &manifest)?;
            names.push(name);
        }
        Ok(names)
    }

    fn import_docker(&self, dir: &Path) -> Result<Vec<String>> {
        let list: Value = serde_json::from_slice(
            &std::fs::read(dir.join("manifest.json")).step(|| "read manifest.json")?,
        )
        .map_err(|e| Error::InvalidConfig(format!("manifest.json: {e}")))?;
        let mut names = Vec::new();
        for img in list.as_array().into_iter().flatten() {
            let cfg_path = dir.join(img["Config"].as_str().unwrap_or(""));
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let config = self.put_blob(
                None,
                std::fs::File::open(&cfg_path).step(|| "open image config")?,
            )?;
            let mut layers = Vec::new();
            for l in img["Layers"].as_array().into_iter().flatten() {
                let p = dir.join(l.as_str().unwrap_or(""));
                let d = self.put_blob(
                    None,
                    std::fs::File::open(&p).step(|| format!("open layer {}", p.display()))?,
                )?;
                layers.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size(&p)}));
            }
            let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": super::MEDIA_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": size(&cfg_path)},
                "layers": layers});
            let md = self.put_blob(
                None,
                serde_json::to_vec(&manifest)
                    .expect("serializes")
                    .as_slice(),
            )?;
            for t in img["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let name = if t.contains('/') {
                    t.to_string()
                } else {
                    format!("docker.io/library/{t}")
                };
                self.tag(&name, &md)?;
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every blob a manifest needs must be present.
    fn check_complete(&self, manifest: &str) -> Result<()> {
        let m = self.read_json(manifest)?;
        let mut need = vec![m["config"]["digest"].as_str().unwrap_or("").to_string()];
        need.extend(
            m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["digest"].as_str().map(str::to_string)),
        );
        for d in need {
            if !self.blob_path(&d)?.exists() {
                return Err(Error::InvalidConfig(format!(
                    "image {manifest} is missing blob {d}"
                )));
            }
        }
        Ok(())
    }

    /// Every name of a manifest, sorted.
    pub fn names_of(&self, manifest: &str) -> Vec<String> {
        self.refs()
            .into_iter()
            .filter(|(_, d)| d == manifest)
            .map(|(n, _)| n)
            .collect()
    }

    /// Resolve a name (or a manifest digest) to its manifest digest.
    pub fn resolve(&self, name: &str) -> Result<String> {
        let refs = self.refs();
        if let Some(d) = refs.get(name) {
            return Ok(d.clone());
        }
        if refs.values().any(|d| d == name) {
            return Ok(name.to_string());
        }
        Err(Error::NotFound(format!("image {name}")))
    }

    pub fn config(&self, name: &str) -> Result<ImageConfig> {
        let m = self.read_json(&self.resolve(name)?)?;
        let v = self.read_json(m["config"]["digest"].as_str().unwrap_or(""))?;
        serde_json::from_value(v).map_err(|e| Error::InvalidConfig(format!("image config: {e}")))
    }

    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let mut out = Vec::new();
        for (name, digest) in self.refs() {
            let m = self.read_json(&digest)?;
            let size = m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["size"].as_u64())
                .sum::<u64>()
                + m["config"]["size"].as_u64().unwrap_or(0);
            out.push(ImageInfo {
                name,
                id: m["config"]["digest"].as_str().unwrap_or("").to_string(),
                digest,
                size,
            });
        }
        Ok(out)
    }

    /// The image's layers as overlayfs lower dirs, bottom layer first. Each layer is
    /// unpacked once (keyed by its diff id) and shared by every image that has it.
    pub fn layers(&self, name: &str) -> Result<Vec<PathBuf>> {
        let m = self.read_json(&self.resolve(name)?)?;
        let cfg = self.config(name)?;
        let layers: Vec<&Value> = m["layers"].as_array().into_iter().flatten().collect();
        if layers.len() != cfg.rootfs.diff_ids.len() {
            return Err(Error::InvalidConfig(format!(
                "image {name}: {} layers but {} diff ids",
                layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let mut dirs = Vec::new();
        for (l, diff) in layers.iter().zip(&cfg.rootfs.diff_ids) {
            let dir = self.root.join("layers").join(hex_of(diff)?);
            if !dir.exists() {
                let _l = self.lock()?;
                if !dir.exists() {
                    let tmp = self
                        .root
                        .join("tmp")
                        .join(format!("layer-{}", hex_of(diff)?));
                    let _ = std::fs::remove_dir_all(&tmp);
                    let blob = self.blob_path(l["digest"].as_str().unwrap_or(""))?;
                    let f = std::fs::File::open(&blob)
                        .step(|| format!("open layer {}", blob.display()))?;
                    unpack::apply_layer(f, &tmp, unpack::Mode::Overlay)?;
                    std::fs::rename(&tmp, &dir).step(|| "store unpacked layer")?;
                }
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// Write the image's full filesystem into `dest` (layers applied in order), for
    /// places where overlayfs is not available.
    pub fn flatten(&self, name: &str, dest: &Path) -> Result<()> {
        let m = self.read_json(&self.resolve(name)?)?;
        for l in m["layers"].as_array().into_iter().flatten() {
            let blob = self.blob_path(l["digest"].as_str().unwrap_or(""))?;
            let f = std::fs::File::open(&blob).step(|| format!("open layer {}", blob.display()))?;
            unpack::apply_layer(f, dest, unpack::Mode::Flatten)?;
        }
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let _l = self.lock()?;
        let mut refs = self.refs();
        if refs.remove(name).is_none() {
            return Err(Error::NotFound(format!("image {name}")));
        }
        self.save_refs(&refs)
    }

    /// Delete blobs and unpacked layers no image refers to. Returns how many went.
    pub fn gc(&self) -> Result<usize> {
        let _l = self.lock()?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for digest in self.refs().values() {
            keep_blobs.insert(hex_of(digest)?.to_string());
            let m = self.read_json(digest)?;
            let cfg_digest = m["config"]["digest"].as_str().unwrap_or("");
            keep_blobs.insert(hex_of(cfg_digest)?.to_string());
            for l in m["layers"].as_array().into_iter().flatten() {
                keep_blobs.insert(hex_of(l["digest"].as_str().unwrap_or(""))?.to_string());
            }
            let cfg: ImageConfig =
                serde_json::from_value(self.read_json(cfg_digest)?).unwrap_or_default();
            for d in &cfg.rootfs.diff_ids {
                keep_layers.insert(hex_of(d)?.to_string());
            }
        }
        let mut n = 0;
        for (sub, keep) in [("blobs/sha256", &keep_blobs), ("layers", &keep_layers)] {
            for e in std::fs::read_dir(self.root.join(sub))
                .step(|| format!("read {sub}"))?
                .flatten()
            {
                if !keep.contains(&e.file_name().to_string_lossy().to_string()) {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
