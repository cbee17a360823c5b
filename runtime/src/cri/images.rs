//! ImageService RPCs over the image store: names are matched as users write them
//! (`busybox`, `docker.io/library/busybox:latest`, an image id or a unique id prefix).

use super::{status, v1, Inner};
use crate::image::{ImageInfo, PullOptions, Reference};
use std::collections::BTreeMap;
use tonic::Status;

type R<T> = Result<T, Status>;

pub(super) fn normalize(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.name())
        .unwrap_or_else(|_| name.to_string())
}

fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// `repo` of a stored name ("reg/repo:tag" or "reg/repo@sha256:…").
fn repository(name: &str) -> &str {
    if let Some((r, _)) = name.split_once('@') {
        return r;
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

impl Inner {
    /// The image id (config digest) of a manifest.
    pub fn image_id(&self, manifest: &str) -> String {
        self.images
            .read_json(manifest)
            .ok()
            .and_then(|m| m["config"]["digest"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Find a stored image: (stored name, manifest digest).
    pub fn resolve_image(&self, q: &str) -> R<(String, String)> {
        let all = self.images.list().map_err(status)?;
        let want = normalize(q);
        let found = all
            .iter()
            .find(|i| i.name == q)
            .or_else(|| all.iter().find(|i| normalize(&i.name) == want))
            .or_else(|| all.iter().find(|i| i.digest == q || i.id == q))
            .or_else(|| {
                // repo@digest names the manifest.
                q.split_once('@').and_then(|(repo, d)| {
                    all.iter().find(|i| {
                        i.digest == d && normalize(repository(&i.name)) == normalize(repo)
                    })
                })
            })
            .or_else(|| {
                let h = hex(q);
                let by_prefix: Vec<&ImageInfo> = all
                    .iter()
                    .filter(|i| h.len() >= 4 && hex(&i.id).starts_with(h))
                    .collect();
                // Several names may share one id; an id prefix must name one image.
                let ids: std::collections::BTreeSet<&str> =
                    by_prefix.iter().map(|i| i.id.as_str()).collect();
                (ids.len() == 1).then(|| by_prefix[0])
            });
        found
            .map(|i| (i.name.clone(), i.digest.clone()))
            .ok_or_else(|| Status::not_found(format!("image {q:?} not found")))
    }

    /// Stored images grouped by image id, as the CRI lists them.
    fn grouped(&self) -> R<BTreeMap<String, v1::Image>> {
        let mut out: BTreeMap<String, v1::Image> = BTreeMap::new();
        for i in self.images.list().map_err(status)? {
            let e = out.entry(i.id.clone()).or_insert_with(|| {
                let user = self
                    .images
                    .config(&i.name)
                    .ok()
                    .and_then(|c| c.config.user)
                    .unwrap_or_default();
                let user_part = user.split(':').next().unwrap_or("").to_string();
                let (uid, username) = match user_part.parse::<i64>() {
                    Ok(n) => (Some(v1::Int64Value { value: n }), String::new()),
                    Err(_) if user_part.is_empty() => {
                        (Some(v1::Int64Value { value: 0 }), String::new())
                    }
                    Err(_) => (None, user_part),
                };
                v1::Image {
                    id: i.id.clone(),
                    size: i.size,
                    uid,
                    username,
                    spec: Some(v1::ImageSpec {
                        image: i.id.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            });
            if i.name.contains('@') {
                e.repo_digests.push(i.name.clone());
            } else {
                e.repo_tags.push(i.name.clone());
                let d = format!("{}@{}", repository(&i.name), i.digest);
                if !e.repo_digests.contains(&d) {
                    e.repo_digests.push(d);
                }
            }
        }
        Ok(out)
    }

    pub fn list_images(&self, f: Option<v1::ImageFilter>) -> R<Vec<v1::Image>> {
        let all = self.grouped()?;
        let want = f
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        match want {
            None => Ok(all.into_values().collect()),
            Some(q) => match self.resolve_image(&q) {
                Ok((_, digest)) => {
                    let id = self.image_id(&digest);
                    Ok(all.get(&id).cloned().into_iter().collect())
                }
                Err(_) => Ok(Vec::new()),
            },
        }
    }

    /// Status of one image; an unknown image is not an error, just absent.
    pub fn image_status(&self, q: &str, verbose: bool) -> R<v1::ImageStatusResponse> {
        let Ok((name, digest)) = self.resolve_image(q) else {
            return Ok(v1::ImageStatusResponse::default());
        };
        let id = self.image_id(&digest);
        let image = self.grouped()?.remove(&id);
        let mut info = std::collections::HashMap::new();
        if verbose {
            let cfg = self
                .images
                .read_json(&id)
                .unwrap_or(serde_json::Value::Null);
            info.insert(
                "info".into(),
                serde_json::json!({"name": name, "manifest": digest, "imageSpec": cfg}).to_string(),
            );
        }
        Ok(v1::ImageStatusResponse { image, info })
    }

    pub fn pull_image(&self, req: v1::PullImageRequest) -> R<String> {
        let name = req
            .image
            .map(|i| i.image)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Status::invalid_argument("image is required"))?;
        let r = Reference::parse(&name).map_err(status)?;
        let host = r.registry.split(':').next().unwrap_or("");
        let insecure = self.cfg.insecure_registries.contains(&r.registry)
            || host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let mut opts = PullOptions {
            insecure,
            mirrors: self
                .cfg
                .registry_mirrors
                .iter()
                .filter(|(reg, _)| *reg == r.registry)
                .map(|(_, m)| m.clone())
                .collect(),
            ..Default::default()
        };
        if let Some(a) = req.auth {
            if !a.username.is_empty() {
                opts.username = Some(a.username);
                opts.password = Some(a.password);
            } else if !a.auth.is_empty() {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.auth.trim())
                    .map_err(|_| Status::invalid_argument("auth is not base64"))?;
                let s = String::from_utf8_lossy(&raw).to_string();
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| Status::invalid_argument("auth is not user:password"))?;
                opts.username = Some(u.into());
                opts.password = Some(p.into());
            }
        }
        let stored = self
            .images
            .pull(&name, &mut opts)
            .map_err(|e| Status::unknown(format!("pull {name}: {e}")))?;
        let digest = self.images.resolve(&stored).map_err(status)?;
        Ok(format!("{}@{digest}", repository(&stored)))
    }

    /// Remove every name of the image, then its unreferenced blobs and layers.
    /// An image that is already gone is not an error.
    pub fn remove_image(&self, q: &str) -> R<()> {
        let Ok((name, digest)) = self.resolve_image(q) else {
            return Ok(());
        };
        let id = self.image_id(&digest);
        let users: Vec<_> = self
            .records()
            .containers
            .values()
            .filter(|c| c.image_id == id)
            .cloned()
            .collect();
        // As containerd: exited containers do not hold their image's name. Live ones do
        // (their root filesystem is made of its layers).
        if let Some(c) = users
            .iter()
            .find(|c| self.container_state(c).0 != v1::ContainerState::ContainerExited)
        {
            return Err(Status::failed_precondition(format!(
                "image {name} is used by running container {}",
                c.id
            )));
        }
        // A tag only: remove that name; an id: every name of it.
        let names: Vec<String> = if q == name || normalize(q) == normalize(&name) {
            vec![name]
        } else {
            self.images
                .list()
                .map_err(status)?
                .into_iter()
                .filter(|i| i.id == id)
                .map(|i| i.name)
                .collect()
        };
        for n in names {
            self.images.remove(&n).map_err(status)?;
        }
        // Layers under an exited container's root stay until it is removed (which
        // collects them then).
        if users.is_empty() {
            self.images.gc().map_err(status)?;
        }
        Ok(())
    }

    pub fn image_fs_info(&self) -> v1::ImageFsInfoResponse {
        let dir = &self.cfg.image_dir;
        let (bytes, inodes) = super::containers::dir_usage(dir);
        // Containers' writable layers (their upper dirs; the rootfs mounts would count the image).
        let uppers: Vec<std::path::PathBuf> = self
            .records()
            .containers
            .values()
            .map(|c| c.dir.join("upper"))
            .collect();
        let (cb, ci) = uppers
            .iter()
            .map(|u| super::containers::dir_usage(u))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let usage = |mp: &std::path::Path, b: u64, n: u64| v1::FilesystemUsage {
            timestamp: super::shim::now_ns(),
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: mp.display().to_string(),
            }),
            used_bytes: Some(v1::UInt64Value { value: b }),
            inodes_used: Some(v1::UInt64Value { value: n }),
        };
        v1::ImageFsInfoResponse {
            image_filesystems: vec![usage(dir, bytes, inodes)],
            container_filesystems: vec![usage(&self.containers_dir(), cb, ci)],
        }
    }
}
