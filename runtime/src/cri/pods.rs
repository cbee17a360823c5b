//! Pod sandbox RPCs: run, stop, remove, status, list, stats.

use super::events::Kind;
use super::records::{labels_match, new_id, PodRecord};
use super::shim::now_ns;
use super::{status, v1, Inner};
use crate::cgroups::Manager;
use crate::error::Error;
use crate::sandbox::{self, SandboxConfig};
use tonic::Status;

type R<T> = Result<T, Status>;

/// The pod's namespace options (all POD, the zero value, when unset).
fn pod_ns(cfg: &v1::PodSandboxConfig) -> v1::NamespaceOption {
    cfg.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

fn host_network(cfg: &v1::PodSandboxConfig) -> bool {
    pod_ns(cfg).network == v1::NamespaceMode::Node as i32
}

impl Inner {
    pub fn run_pod(&self, req: v1::RunPodSandboxRequest) -> R<String> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        config
            .metadata
            .as_ref()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| Status::invalid_argument("config.metadata.name is required"))?;
        if !req.runtime_handler.is_empty() && req.runtime_handler != "skiff" {
            return Err(Status::invalid_argument(format!(
                "unknown runtime handler {:?} (this runtime has \"skiff\")",
                req.runtime_handler
            )));
        }
        let mut rec = PodRecord {
            id: new_id(),
            config: config.clone(),
            runtime_handler: req.runtime_handler,
            created_at: now_ns(),
            ready: true,
            ip: String::new(),
            host_network: host_network(&config),
            timings: None,
        };
        {
            let recs = self.records();
            let name = rec.reserved_name();
            if let Some(other) = recs.pods.values().find(|p| p.reserved_name() == name) {
                return Err(Status::already_exists(format!(
                    "pod name {name:?} is reserved for sandbox {}",
                    other.id
                )));
            }
        }
        let dns = config.dns_config.clone().unwrap_or_default();
        let parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty());
        let sb_cfg = SandboxConfig {
            // As containerd: no hostname asked for, the node's (a pod name may be
            // longer than a hostname can be).
            hostname: if config.hostname.is_empty() {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .map_err(|e| Status::internal(format!("node hostname: {e}")))?
            } else {
                config.hostname.clone()
            },
            dns_servers: dns.servers,
            dns_searches: dns.searches,
            dns_options: dns.options,
            hosts: Vec::new(),
            cgroup_parent: parent,
            share_pid: pod_ns(&config).pid == v1::NamespaceMode::Pod as i32,
            holder_binary: Some(self.cfg.shim_binary.clone()),
        };
        let root = &self.cfg.root;
        // A pod network needs a CNI network: without one the pod is refused with the
        // reason Status gives for NetworkReady=false (containerd refuses it too), before
        // anything is made.
        let network = if rec.host_network {
            None
        } else {
            Some(self.cni_network().map_err(|why| {
                Status::failed_precondition(format!(
                    "failed to set up the pod network: the network is not ready: {why}"
                ))
            })?)
        };
        let t0 = std::time::Instant::now();
        sandbox::create(root, &rec.id, &sb_cfg).map_err(status)?;
        let namespaces = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        if let Some((plugin, mut conf)) = network {
            // hostPorts, as the CNI portMappings capability passes them.
            let maps: Vec<serde_json::Value> = config
                .port_mappings
                .iter()
                .filter(|m| m.host_port > 0)
                .map(|m| {
                    let proto = match v1::Protocol::try_from(m.protocol) {
                        Ok(v1::Protocol::Udp) => "udp",
                        Ok(v1::Protocol::Sctp) => "sctp",
                        _ => "tcp",
                    };
                    serde_json::json!({"hostPort": m.host_port, "containerPort": m.container_port,
                            "protocol": proto, "hostIP": m.host_ip})
                })
                .collect();
            if !maps.is_empty() {
                conf["runtimeConfig"] = serde_json::json!({"portMappings": maps});
            }
            match sandbox::network_add(root, &rec.id, &plugin, &conf, "eth0") {
                Ok(_) => {
                    rec.ip = sandbox::load(root, &rec.id)
                        .ok()
                        .and_then(|s| s.ip)
                        .unwrap_or_default();
                }
                Err(e) => {
                    let _ = sandbox::remove(root, &rec.id);
                    return Err(status(e));
                }
            }
        }
        rec.timings = Some((namespaces, t1.elapsed().as_secs_f64()));
        let id = rec.id.clone();
        if let Err(e) = self.records().save_pod(rec) {
            let _ = sandbox::remove(root, &id);
            return Err(status(e));
        }
        self.emit(&id, &id, Kind::ContainerCreatedEvent);
        self.emit(&id, &id, Kind::ContainerStartedEvent);
        Ok(id)
    }

    pub(super) fn find_pod_record(&self, q: &str) -> R<PodRecord> {
        let recs = self.records();
        recs.pod_id(q)
            .and_then(|id| recs.pods.get(&id).cloned())
            .ok_or_else(|| Status::not_found(format!("pod sandbox {q:?} not found")))
    }

    /// Containers of a pod, ids only.
    fn pod_containers(&self, pod: &str) -> Vec<String> {
        self.records()
            .containers
            .values()
            .filter(|c| c.pod_id == pod)
            .map(|c| c.id.clone())
            .collect()
    }

    /// The network namespace to reach a ready pod's ports in (None: the node's own).
    pub fn pod_netns(&self, q: &str) -> R<Option<std::path::PathBuf>> {
        let p = self.find_pod_record(q)?;
        if !p.ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                p.id
            )));
        }
        if p.host_network {
            return Ok(None);
        }
        let sb = sandbox::load(&self.cfg.root, &p.id).map_err(status)?;
        Ok(Some(sb.ns_path("net")))
    }

    pub fn stop_pod(&self, q: &str) -> R<()> {
        let mut pod = self.find_pod_record(q)?;
        for c in self.pod_containers(&pod.id) {
            self.stop_container(&c, 0)?;
        }
        sandbox::network_del(&self.cfg.root, &pod.id)
            .or_else(|e| match e {
                Error::NotFound(_) => Ok(()),
                e => Err(e),
            })
            .map_err(status)?;
        let id = pod.id.clone();
        if pod.ready || !pod.ip.is_empty() {
            pod.ready = false;
            pod.ip.clear();
            self.records().save_pod(pod).map_err(status)?;
        }
        self.emit(&id, &id, Kind::ContainerStoppedEvent);
        Ok(())
    }

    pub fn remove_pod(&self, q: &str) -> R<()> {
        // Removing a pod that is already gone succeeds (the call is idempotent).
        let Ok(pod) = self.find_pod_record(q) else {
            return Ok(());
        };
        for c in self.pod_containers(&pod.id) {
            self.remove_container(&c)?;
        }
        sandbox::remove(&self.cfg.root, &pod.id).map_err(status)?;
        self.records().remove_pod(&pod.id).map_err(status)?;
        self.emit(&pod.id, &pod.id, Kind::ContainerDeletedEvent);
        Ok(())
    }

    fn pod_state(p: &PodRecord) -> i32 {
        if p.ready {
            v1::PodSandboxState::SandboxReady as i32
        } else {
            v1::PodSandboxState::SandboxNotready as i32
        }
    }

    pub fn pod_status(&self, q: &str, verbose: bool) -> R<v1::PodSandboxStatusResponse> {
        let p = self.find_pod_record(q)?;
        let ns = p
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let mut info = std::collections::HashMap::new();
        if verbose {
            let sb = sandbox::load(&self.cfg.root, &p.id).ok();
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "sandboxDir": sb.as_ref().map(|s| s.dir.clone()),
                    "cgroup": sb.as_ref().map(|s| s.cgroup.clone()),
                    "hostNetwork": p.host_network,
                    "netns": sb.as_ref().map(|s| s.ns_path("net")),
                    "config": p.config,
                    // Measured while it was made (kubectl skiff trace shows them).
                    "timings": p.timings.map(|(ns, cni)| serde_json::json!({
                        "namespacesSeconds": ns, "cniAddSeconds": cni})),
                })
                .to_string(),
            );
        }
        Ok(v1::PodSandboxStatusResponse {
            status: Some(v1::PodSandboxStatus {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                state: Self::pod_state(&p),
                created_at: p.created_at,
                network: Some(v1::PodSandboxNetworkStatus {
                    ip: p.ip.clone(),
                    additional_ips: Vec::new(),
                }),
                linux: Some(v1::LinuxPodSandboxStatus {
                    namespaces: Some(v1::Namespace { options: ns }),
                }),
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
                runtime_handler: p.runtime_handler.clone(),
            }),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_ns(),
        })
    }

    pub fn list_pods(&self, f: Option<v1::PodSandboxFilter>) -> Vec<v1::PodSandbox> {
        let recs = self.records();
        let f = f.unwrap_or_default();
        let mut out: Vec<v1::PodSandbox> = recs
            .pods
            .values()
            .filter(|p| f.id.is_empty() || p.id.starts_with(&f.id))
            .filter(|p| {
                f.state
                    .as_ref()
                    .is_none_or(|s| s.state == Self::pod_state(p))
            })
            .filter(|p| labels_match(&p.config.labels, &f.label_selector))
            .map(|p| v1::PodSandbox {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                state: Self::pod_state(p),
                created_at: p.created_at,
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
                runtime_handler: p.runtime_handler.clone(),
            })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.created_at));
        out
    }

    pub fn pod_stats(&self, q: &str) -> R<v1::PodSandboxStats> {
        let p = self.find_pod_record(q)?;
        let sb = sandbox::load(&self.cfg.root, &p.id).map_err(status)?;
        let st = Manager::open(&sb.cgroup).map_err(status)?.stats();
        let now = now_ns();
        let containers = self
            .pod_containers(&p.id)
            .iter()
            .filter_map(|c| self.container_stats(c).ok())
            .collect();
        Ok(v1::PodSandboxStats {
            attributes: Some(v1::PodSandboxAttributes {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
            }),
            linux: Some(v1::LinuxPodSandboxStats {
                cpu: Some(super::containers::cpu_usage(&st, now)),
                memory: Some(super::containers::memory_usage(&st, now)),
                network: None,
                process: Some(v1::ProcessUsage {
                    timestamp: now,
                    process_count: Some(v1::UInt64Value {
                        value: st.pids.current,
                    }),
                }),
                containers,
            }),
            windows: None,
        })
    }
}
