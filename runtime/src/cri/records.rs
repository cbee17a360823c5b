//! What the CRI server knows about its pods and containers, kept on disk (one JSON file
//! each, written atomically) so a restarted server lists the same objects. Live state
//! (running, exited, exit code) is not stored here: it is read from the runtime and the
//! monitors' exit files each time.

use crate::error::{Context, Error, Result};
use k8s_cri::v1;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: v1::PodSandboxConfig,
    pub runtime_handler: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// False once StopPodSandbox ran.
    pub ready: bool,
    pub ip: String,
    /// hostNetwork pods: containers stay in the node's network namespace.
    pub host_network: bool,
    /// How long making it took: (namespaces and the holder, CNI ADD), in seconds.
    #[serde(default)]
    pub timings: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: v1::ContainerConfig,
    /// The image as the user named it.
    pub image: String,
    /// Manifest digest the image resolved to.
    pub image_ref: String,
    /// Config digest (the image id).
    pub image_id: String,
    pub created_at: i64,
    /// 0 until StartContainer.
    pub started_at: i64,
    /// Full path of the CRI log (pod log directory joined with the container's log_path).
    pub log_path: PathBuf,
    /// Working directory: bundle, overlay upper/work dirs, exit file.
    pub dir: PathBuf,
}

impl ContainerRecord {
    pub fn exit_file(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn name(&self) -> &str {
        self.config
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
    }
}

impl PodRecord {
    pub fn metadata(&self) -> v1::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
    /// The name the CRI reserves per pod: name, namespace, uid and attempt.
    pub fn reserved_name(&self) -> String {
        let m = self.metadata();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }
}

/// All records, loaded from and saved to `<dir>/pods/<id>.json`, `<dir>/containers/<id>.json`.
#[derive(Debug)]
pub struct Records {
    dir: PathBuf,
    pub pods: BTreeMap<String, PodRecord>,
    pub containers: BTreeMap<String, ContainerRecord>,
}

fn save_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(v).expect("serializes"))
        .step(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).step(|| format!("write {}", path.display()))
}

fn load_all<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .step(|| format!("read {}", dir.display()))?
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read(&p).step(|| format!("read {}", p.display()))?;
            let v = serde_json::from_slice(&text)
                .map_err(|err| Error::InvalidConfig(format!("corrupt {}: {err}", p.display())))?;
            out.push(v);
        }
    }
    Ok(out)
}

impl Records {
    pub fn open(dir: &Path) -> Result<Records> {
        for sub in ["pods", "containers"] {
            std::fs::create_dir_all(dir.join(sub))
                .step(|| format!("create {}", dir.join(sub).display()))?;
        }
        let pods = load_all::<PodRecord>(&dir.join("pods"))?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let containers = load_all::<ContainerRecord>(&dir.join("containers"))?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        Ok(Records {
            dir: dir.to_path_buf(),
            pods,
            containers,
        })
    }

    pub fn save_pod(&mut self, p: PodRecord) -> Result<()> {
        save_json(&self.dir.join("pods").join(format!("{}.json", p.id)), &p)?;
        self.pods.insert(p.id.clone(), p);
        Ok(())
    }

    pub fn remove_pod(&mut self, id: &str) -> Result<()> {
        match std::fs::remove_file(self.dir.join("pods").join(format!("{id}.json"))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).step(|| format!("remove record of pod {id}")),
        }
        self.pods.remove(id);
        Ok(())
    }

    pub fn save_container(&mut self, c: ContainerRecord) -> Result<()> {
        save_json(
            &self.dir.join("containers").join(format!("{}.json", c.id)),
            &c,
        )?;
        self.containers.insert(c.id.clone(), c);
        Ok(())
    }

    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        match std::fs::remove_file(self.dir.join("containers").join(format!("{id}.json"))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).step(|| format!("remove record of container {id}")),
        }
        self.containers.remove(id);
        Ok(())
    }

    /// Find a pod by full id or unique id prefix (as crictl allows).
    pub fn pod_id(&self, q: &str) -> Option<String> {
        unique_prefix(self.pods.keys(), q)
    }

    pub fn container_id(&self, q: &str) -> Option<String> {
        unique_prefix(self.containers.keys(), q)
    }
}

fn unique_prefix<'a>(ids: impl Iterator<Item = &'a String>, q: &str) -> Option<String> {
    if q.is_empty() {
        return None;
    }
    let mut found = None;
    for id in ids {
        if id == q {
            return Some(id.clone());
        }
        if id.starts_with(q) {
            if found.is_some() {
                return None;
            }
            found = Some(id.clone());
        }
    }
    found
}

/// Whether every selector pair is among the labels (the CRI's label filter).
pub fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A new random 64-hex-digit id, as containerd makes them.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}
