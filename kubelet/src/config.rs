//! Kubelet settings (the `skiff-kubelet` flags).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// The Node object's name.
    pub node_name: String,
    /// The address reported as InternalIP and used as the pods' hostIP.
    pub node_ip: IpAddr,
    /// The CRI socket (`unix:///run/skiff/cri.sock`).
    pub runtime_endpoint: String,
    /// Pod volumes live under `<root_dir>/pods/<uid>/volumes`.
    pub root_dir: PathBuf,
    /// Pod logs go to `<pod_log_dir>/<namespace>_<name>_<uid>/<container>/<restarts>.log`.
    pub pod_log_dir: PathBuf,
    /// Advertised `pods` capacity.
    pub max_pods: u32,
    /// Labels added to the Node at registration (`--node-labels`).
    pub node_labels: Vec<(String, String)>,
    /// How often pods are compared with the runtime even without API events (the PLEG relist).
    pub sync_period: Duration,
    /// How often running pods' configMap and secret volumes are rewritten from the API.
    pub sync_frequency: Duration,
    /// How often the Lease is renewed.
    pub lease_renew: Duration,
    /// The Lease's duration.
    pub lease_duration_seconds: i32,
    /// How often Node status is posted when nothing changed.
    pub status_period: Duration,
    /// What pods' resolv.conf is made from.
    pub dns: crate::pods::dns::Settings,
}

impl Config {
    pub fn new(node_name: String, node_ip: IpAddr, runtime_endpoint: String) -> Config {
        Config {
            node_name,
            node_ip,
            runtime_endpoint,
            root_dir: PathBuf::from("/var/lib/skiff/kubelet"),
            pod_log_dir: PathBuf::from("/var/log/pods"),
            max_pods: 110,
            node_labels: Vec::new(),
            sync_period: Duration::from_secs(1),
            sync_frequency: Duration::from_secs(60),
            lease_renew: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_period: Duration::from_secs(60),
            dns: Default::default(),
        }
    }
}
