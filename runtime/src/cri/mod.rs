//! A CRI v1 (`runtime.v1`) server over a unix socket: the kubelet's and crictl's way into
//! the runtime. Pods are [`crate::sandbox`]es, containers run under a per-container
//! monitor ([`shim`]) that writes the CRI log and records the exit, images come from
//! [`crate::image::Store`]. Everything the server knows is on disk under the root, so a
//! restarted server (even after kill -9) lists the same pods and containers.

pub mod attach;
mod authority;
mod containers;
pub mod events;
mod images;
pub mod oci_config;
pub mod pbjson;
mod pods;
pub mod records;
mod service;
pub mod shim;
pub mod spdy;
pub mod streaming;

use crate::error::Error;
use crate::image::Store;
use crate::Runtime;
use records::Records;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use skiff_cri::{client, logs, v1};

/// Server settings (`skiff-runtime serve` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// State root (the runtime's `--root`); CRI records live in `<root>/cri`.
    pub root: PathBuf,
    /// Image store directory.
    pub image_dir: PathBuf,
    pub listen: PathBuf,
    /// CNI network configuration directory (first .conf/.conflist by name is used).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are.
    pub cni_bin_dir: Vec<PathBuf>,
    /// The skiff-runtime binary the monitors run as.
    pub shim_binary: PathBuf,
    /// Pull over plain HTTP from these registries (host:port), e.g. a loopback registry.
    pub insecure_registries: Vec<String>,
    /// (registry, mirror base URL): tried before the registry, in order.
    pub registry_mirrors: Vec<(String, String)>,
    /// Where the streaming server (exec, attach, port-forward) listens; port 0 picks one.
    pub streaming_addr: std::net::SocketAddr,
}

/// Shared server state; every RPC works on it from a blocking thread.
pub struct Inner {
    pub cfg: Config,
    pub rt: Runtime,
    pub images: Store,
    pub records: Mutex<Records>,
    pub events: events::Events,
    /// This node's pod CIDR, from the kubelet (CRI UpdateRuntimeConfig); kept on disk.
    pub pod_cidr: Mutex<Option<String>>,
}

/// In a CNI configuration, `"subnet": "usePodCidr"` stands for the node's pod CIDR (the
/// kubenet convention), filled in from what the kubelet sent.
pub const USE_POD_CIDR: &str = "usePodCidr";

impl Inner {
    pub fn open(cfg: Config) -> crate::Result<Inner> {
        std::fs::create_dir_all(&cfg.root).map_err(|e| Error::Io {
            step: format!("create {}", cfg.root.display()),
            err: e,
        })?;
        let rt = Runtime::new(&cfg.root)?;
        let images = Store::open(&cfg.image_dir)?;
        let records = Mutex::new(Records::open(&cfg.root.join("cri"))?);
        let pod_cidr = std::fs::read_to_string(cfg.root.join("cri").join("pod-cidr"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Ok(Inner {
            cfg,
            rt,
            images,
            records,
            events: events::Events::new(),
            pod_cidr: Mutex::new(pod_cidr),
        })
    }

    /// Remember the node's pod CIDR (written before it is used: a restarted server
    /// allocates from the same range).
    pub fn set_pod_cidr(&self, cidr: &str) -> crate::Result<()> {
        let valid = cidr.split_once('/').is_some_and(|(a, p)| {
            a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 30)
        });
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "pod CIDR {cidr:?} is not an IPv4 CIDR of at least 4 addresses"
            )));
        }
        let path = self.cfg.root.join("cri").join("pod-cidr");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, cidr)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Io {
                step: format!("write {}", path.display()),
                err: e,
            })?;
        *self.pod_cidr.lock().unwrap_or_else(|e| e.into_inner()) = Some(cidr.to_string());
        Ok(())
    }

    pub fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.cfg.root.join("cri").join("containers")
    }

    /// The CNI network to attach pods to: (plugin binary, config), or why there is none.
    pub fn cni_network(&self) -> Result<(PathBuf, serde_json::Value), String> {
        let dir = &self.cfg.cni_conf_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("no CNI configuration: {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
            })
            .collect();
        files.sort();
        let file = files
            .first()
            .ok_or_else(|| format!("no CNI configuration in {}", dir.display()))?;
        let text = std::fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let mut conf: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: invalid JSON: {e}", file.display()))?;
        // A conflist: use its first plugin, with the list's name and version.
        if let Some(first) = conf["plugins"].as_array().and_then(|a| a.first()).cloned() {
            let mut p = first;
            p["name"] = conf["name"].clone();
            p["cniVersion"] = conf["cniVersion"].clone();
            conf = p;
        }
        if conf["ipam"]["subnet"] == USE_POD_CIDR {
            let cidr = self
                .pod_cidr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            conf["ipam"]["subnet"] = match cidr {
                Some(c) => c.into(),
                None => {
                    return Err(format!(
                        "{}: the pod CIDR is not known yet (the kubelet sends it once its Node has spec.podCIDR)",
                        file.display()
                    ))
                }
            };
        }
        let typ = conf["type"]
            .as_str()
            .ok_or_else(|| format!("{}: no plugin type", file.display()))?
            .to_string();
        let plugin = self
            .cfg
            .cni_bin_dir
            .iter()
            .map(|d| d.join(&typ))
            .find(|p| p.exists())
            .ok_or_else(|| format!("CNI plugin {typ:?} not found in {:?}", self.cfg.cni_bin_dir))?;
        Ok((plugin, conf))
    }
}

/// Map library errors to gRPC codes, as clients branch on them (NotFound above all).
pub fn status(e: impl Into<Error>) -> tonic::Status {
    let e = e.into();
    let msg = e.to_string();
    match e {
        Error::NotFound(_) | Error::Image(skiff_image::Error::NotFound(_)) => {
            tonic::Status::not_found(msg)
        }
        Error::Image(skiff_image::Error::InvalidConfig(_)) => tonic::Status::invalid_argument(msg),
        Error::Exists(_) => tonic::Status::already_exists(msg),
        Error::InvalidConfig(_) => tonic::Status::invalid_argument(msg),
        Error::Unsupported(_) => tonic::Status::unimplemented(msg),
        Error::State { .. } => tonic::Status::failed_precondition(msg),
        _ => tonic::Status::unknown(msg),
    }
}

/// Listen on `cfg.listen` and serve until the process is stopped.
pub async fn serve(cfg: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use k8s_cri::v1::image_service_server::ImageServiceServer;
    use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
    let listen = cfg.listen.clone();
    let inner = Arc::new(Inner::open(cfg)?);
    inner.seed_stopped();
    let watcher = inner.clone();
    std::thread::Builder::new()
        .name("exit-events".into())
        .spawn(move || watcher.watch_exits())?;
    if let Some(d) = listen.parent() {
        std::fs::create_dir_all(d)?;
    }
    remove_stale_socket(&listen)?;
    let uds = tokio::net::UnixListener::bind(&listen)?;
    std::fs::set_permissions(&listen, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
    // Each connection through the :authority fixer (see authority.rs).
    let incoming =
        futures_util::StreamExt::map(tokio_stream::wrappers::UnixListenerStream::new(uds), |c| {
            c.map(authority::fix)
        });
    let streaming = streaming::Streaming::start(inner.cfg.streaming_addr, inner.clone()).await?;
    let svc = service::Cri { inner, streaming };
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(svc.clone()).max_decoding_message_size(16 << 20))
        .add_service(ImageServiceServer::new(svc).max_decoding_message_size(16 << 20))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// A socket left by a dead server is replaced; one with a live server is an error.
fn remove_stale_socket(p: &Path) -> std::io::Result<()> {
    if !p.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(p).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", p.display()),
        ));
    }
    std::fs::remove_file(p)
}
