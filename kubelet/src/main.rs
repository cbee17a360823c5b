//! skiff-kubelet: the node agent. Flags are named as the kubelet names them.

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use skiff_cri::client::Clients;
use skiff_cri::v1;
use skiff_kubelet::{events, lease, node, pods::Kubelet, server, Config};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "skiff-kubelet", version, about = "Skiff's kubelet")]
struct Args {
    /// The kubeconfig that reaches the API server (`skiff-control kubeconfig` prints one).
    /// When joining (--token), the node's credentials are written here.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Join the cluster whose API server is here (https://HOST:PORT), when --kubeconfig
    /// does not exist yet.
    #[arg(long, requires_all = ["token", "ca_cert_hash"])]
    server: Option<String>,
    /// The other API servers of an HA control plane (https://HOST:PORT, comma-separated):
    /// the node's connections go through a local front that fails over between them
    /// and the kubeconfig's.
    #[arg(long, value_delimiter = ',')]
    api_servers: Vec<String>,
    /// A bootstrap token (`skiff-control token create`): authenticates the request for
    /// this node's certificates, once.
    #[arg(long, requires = "server")]
    token: Option<String>,
    /// The pin of the cluster CA (`sha256:…`, printed with the token): the API server is
    /// trusted only if its CA has it.
    #[arg(long, requires = "server")]
    ca_cert_hash: Option<String>,
    /// The Node's name (default: the host name).
    #[arg(long = "hostname-override")]
    node_name: Option<String>,
    /// The node's address, reported as InternalIP and as the pods' hostIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    #[arg(long, default_value = "unix:///run/skiff/cri.sock")]
    container_runtime_endpoint: String,
    /// Where pod volumes live.
    #[arg(long, default_value = "/var/lib/skiff/kubelet")]
    root_dir: PathBuf,
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Labels for the Node, `key=value,...`.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// How often running pods' configMap and secret volumes follow the API.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    sync_frequency: Duration,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    node_lease_renew_interval: u64,
    /// The Lease's duration in seconds.
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: i32,
    /// The kubelet API's serving certificate (`skiff-control kubelet-certs` issues one);
    /// without it the API (logs for kubectl) is not served.
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// The CA that signs the API server's client certificate.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// The kubelet API's address (default: --node-ip) and port (0: any free port).
    #[arg(long)]
    address: Option<IpAddr>,
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The cluster's DNS server(s), written into ClusterFirst pods' resolv.conf
    /// (kube-dns' ClusterIP, usually 10.96.0.10). Without it pods get the node's.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain: pods search NAMESPACE.svc.DOMAIN, svc.DOMAIN, DOMAIN.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolver settings, for Default-policy pods and after the cluster's
    /// search list ("" for none).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Log verbosity as the kubelet counts it: 0-1 info (what it does to pods), 2-3
    /// debug (each decision), 4+ trace. RUST_LOG, when set, takes precedence.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    /// Log lines as text or JSON.
    #[arg(long = "log-format", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// Why the runtime makes the node not Ready now (None: it and its network are ready).
async fn runtime_not_ready(cri: &Clients) -> Option<String> {
    let status = cri.rt.clone().status(v1::StatusRequest::default()).await;
    node::runtime_not_ready(status.map(|r| r.into_inner()))
}

fn init_logs(a: &Args) {
    let level = match a.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,skiff_kubelet={level}"))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if a.log_format == "json" {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
}

fn config(a: &Args) -> Result<Config> {
    let name = match &a.node_name {
        Some(n) => n.clone(),
        None => nix_hostname()?,
    };
    let mut cfg = Config::new(
        name.to_lowercase(),
        a.node_ip,
        a.container_runtime_endpoint.clone(),
    );
    cfg.pod_log_dir = a.pod_log_dir.clone();
    cfg.root_dir = a.root_dir.clone();
    cfg.sync_frequency = a.sync_frequency;
    cfg.max_pods = a.max_pods;
    cfg.lease_renew = Duration::from_secs(a.node_lease_renew_interval.max(1));
    cfg.lease_duration_seconds = a.node_lease_duration_seconds;
    cfg.dns.cluster_dns = a.cluster_dns.clone();
    cfg.dns.cluster_domain = a.cluster_domain.trim_end_matches('.').to_string();
    if !a.resolv_conf.as_os_str().is_empty() {
        match std::fs::read_to_string(&a.resolv_conf) {
            Ok(text) => cfg.dns.host = skiff_kubelet::pods::dns::Resolv::parse(&text),
            // As the kubelet: a node without one has no resolvers to hand on.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tracing::warn!(
                resolv_conf = %a.resolv_conf.display(),
                "no resolver configuration: pods get only the cluster's"
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("--resolv-conf {}", a.resolv_conf.display()))
            }
        }
    }
    for l in &a.node_labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-labels: {l:?} is not key=value"))?;
        cfg.node_labels.push((k.to_string(), v.to_string()));
    }
    Ok(cfg)
}

/// Join with a bootstrap token: the CA by its pin, this node's client certificate (the
/// kubeconfig at `path`) and its serving certificate (under ROOT_DIR/pki), each through
/// a CertificateSigningRequest the control plane approves.
fn join(server: &str, token: &str, pin: &str, path: &std::path::Path, cfg: &Config) -> Result<()> {
    use skiff_kubelet::bootstrap::{self, Auth, Wanted};
    let node = cfg.node_name.as_str();
    tracing::info!(server, node, "joining the cluster with a bootstrap token");
    let ca = bootstrap::fetch_ca(server, pin)?;
    let wait = Duration::from_secs(300);
    let (cert, key) = bootstrap::request_certificate(
        server,
        &ca,
        &Auth::Token(token),
        &Wanted {
            node,
            signer: "kubernetes.io/kube-apiserver-client-kubelet",
            usages: &["digital signature", "key encipherment", "client auth"],
            names: &[],
        },
        wait,
    )?;
    let names = bootstrap::serving_names(node, cfg.node_ip);
    let (scert, skey) = bootstrap::request_certificate(
        server,
        &ca,
        &Auth::Client {
            cert: &cert,
            key: &key,
        },
        &Wanted {
            node,
            signer: "kubernetes.io/kubelet-serving",
            usages: &["digital signature", "key encipherment", "server auth"],
            names: &names,
        },
        wait,
    )?;
    let pki = cfg.root_dir.join("pki");
    bootstrap::write_private(&pki.join("ca.crt"), &ca)?;
    bootstrap::write_private(&pki.join("kubelet.crt"), &scert)?;
    bootstrap::write_private(&pki.join("kubelet.key"), &skey)?;
    // Last: its existence says the join is done.
    bootstrap::write_private(path, &bootstrap::kubeconfig(server, &ca, &cert, &key, node))?;
    tracing::info!(node, kubeconfig = %path.display(), "joined: client and serving certificates issued");
    Ok(())
}

fn nix_hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").context("read the host name")?;
    Ok(h.trim().to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logs(&args);
    let cfg = config(&args)?;
    if !args.kubeconfig.exists() {
        match (&args.server, &args.token, &args.ca_cert_hash) {
            (Some(server), Some(token), Some(pin)) => {
                let (server, token, pin) = (server.clone(), token.clone(), pin.clone());
                let (path, cfg) = (args.kubeconfig.clone(), cfg.clone());
                tokio::task::spawn_blocking(move || join(&server, &token, &pin, &path, &cfg))
                    .await??;
            }
            _ => anyhow::bail!(
                "--kubeconfig {} does not exist; to join a cluster give --server, --token and --ca-cert-hash",
                args.kubeconfig.display()
            ),
        }
    }
    let kc = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("read {}", args.kubeconfig.display()))?;
    let mut kcfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("use the kubeconfig")?;
    if !args.api_servers.is_empty() {
        let url =
            skiff_apimachinery::failover::front(&kcfg.cluster_url.to_string(), &args.api_servers)
                .await
                .context("--api-servers")?;
        tracing::info!(front = %url, servers = ?args.api_servers, "API servers behind a local front");
        kcfg.cluster_url = url.parse().context("front URL")?;
    }
    let client = kube::Client::try_from(kcfg).context("build the API client")?;
    // Long enough for a StopContainer that waits out a grace period, or a pull.
    let cri = Clients::connect(&cfg.runtime_endpoint, None, Duration::from_secs(600))
        .await
        .context("connect to the container runtime")?;
    let version = cri
        .rt
        .clone()
        .version(v1::VersionRequest::default())
        .await
        .context("ask the runtime its version")?
        .into_inner();
    let machine = node::Machine::read(format!(
        "{}://{}",
        version.runtime_name, version.runtime_version
    ));
    // Pods bound to this node, kept in a reflector (the API and the sync loop read it).
    let (reader, writer) = reflector::store();
    // The serving certificate: given, or the one a join obtained.
    let joined = cfg.root_dir.join("pki");
    let serving = match &args.tls_cert_file {
        Some(cert) => Some((
            cert.clone(),
            args.tls_private_key_file.clone().expect("clap requires it"),
            args.client_ca_file.clone().expect("clap requires it"),
        )),
        None if joined.join("kubelet.crt").exists() => Some((
            joined.join("kubelet.crt"),
            joined.join("kubelet.key"),
            joined.join("ca.crt"),
        )),
        None => None,
    };
    let port = match &serving {
        Some((cert, key, ca)) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
            };
            let tls =
                skiff_apimachinery::tls::server_config_from(&read(ca)?, &read(cert)?, &read(key)?)?;
            let addr = std::net::SocketAddr::new(args.address.unwrap_or(cfg.node_ip), args.port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            let bound = listener.local_addr()?;
            let port = bound.port();
            let state = Arc::new(server::ApiState {
                cfg: cfg.clone(),
                pods: reader.clone(),
                cri: cri.clone(),
            });
            tokio::spawn(skiff_apimachinery::tls::serve(
                listener,
                server::router(state),
                tls,
            ));
            tracing::info!(%bound, "serving the kubelet API over HTTPS");
            i32::from(port)
        }
        None => {
            tracing::warn!("no --tls-cert-file: the kubelet API (logs, exec) is not served");
            0
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    // The API server may come up after the kubelet (a node booting with its control
    // plane): say why and try again, as long as it takes.
    let mut delay = Duration::from_millis(500);
    let node_uid = loop {
        let not_ready = runtime_not_ready(&cri).await;
        match node::register(&nodes, &cfg, &machine, port, not_ready.as_deref()).await {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot register the node yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    tracing::info!(node = %cfg.node_name, runtime = %version.runtime_name, runtime_version = %version.runtime_version, "node registered");
    events::record_node(
        &client,
        &cfg.node_name,
        false,
        "Starting",
        "Starting kubelet.".into(),
    )
    .await;

    // The heartbeat, the Node's pod CIDR handed to the runtime, and Node status now
    // and then.
    let leases: Api<Lease> = Api::namespaced(client.clone(), lease::NAMESPACE);
    {
        let (cfg, cri, machine) = (cfg.clone(), cri.clone(), machine.clone());
        let client = client.clone();
        tokio::spawn(async move {
            let mut since_status = Duration::ZERO;
            // What was last posted: None before the first post (registration posts
            // Ready, which the first heartbeat confirms or corrects).
            let mut posted: Option<Option<String>> = None;
            let mut sent_cidr: Option<String> = None;
            let mut since_lease = cfg.lease_renew;
            loop {
                if since_lease >= cfg.lease_renew {
                    since_lease = Duration::ZERO;
                    if let Err(e) = lease::renew(&leases, &cfg, &node_uid).await {
                        tracing::warn!(error = %e, "renew lease");
                    }
                }
                let api_node = nodes.get_status(&cfg.node_name).await.ok();
                // As the kubelet does with containerd: the Node's spec.podCIDR (from
                // the node IPAM controller) goes to the runtime, whose CNI allocates
                // pod addresses from it.
                let cidr = api_node
                    .as_ref()
                    .and_then(|n| n.spec.as_ref())
                    .and_then(|s| s.pod_cidr.clone());
                if let Some(c) = cidr.filter(|c| sent_cidr.as_ref() != Some(c)) {
                    let req = v1::UpdateRuntimeConfigRequest {
                        runtime_config: Some(v1::RuntimeConfig {
                            network_config: Some(v1::NetworkConfig {
                                pod_cidr: c.clone(),
                            }),
                        }),
                    };
                    match cri.rt.clone().update_runtime_config(req).await {
                        Ok(_) => {
                            tracing::info!(pod_cidr = %c, "pod CIDR handed to the runtime");
                            sent_cidr = Some(c);
                        }
                        Err(e) => {
                            tracing::warn!(error = e.message(), "update runtime config")
                        }
                    }
                }
                // The runtime's health (and its network's) is checked at every
                // heartbeat; a change is posted at once, the rest every status period.
                let not_ready = runtime_not_ready(&cri).await;
                // As the kubelet does: the Node's Ready as the API has it (the node
                // lifecycle controller sets Unknown while the lease is stale) is
                // corrected at the next heartbeat, not at the next status period.
                let api_ready = api_node.as_ref().and_then(node::api_ready);
                if since_status >= cfg.status_period
                    || posted.as_ref() != Some(&not_ready)
                    || api_ready.is_some_and(|r| r != not_ready.is_none())
                {
                    since_status = Duration::ZERO;
                    match node::post_status(&nodes, &cfg, &machine, not_ready.as_deref(), port)
                        .await
                    {
                        Ok(_) => {
                            // As the kubelet: an event when Ready changes (and at start).
                            let was = posted.as_ref().map(Option::is_none);
                            if was != Some(not_ready.is_none()) {
                                let reason = if not_ready.is_none() {
                                    "NodeReady"
                                } else {
                                    "NodeNotReady"
                                };
                                let msg = format!("Node {} status is now: {reason}", cfg.node_name);
                                events::record_node(&client, &cfg.node_name, false, reason, msg)
                                    .await;
                            }
                            posted = Some(not_ready.clone());
                        }
                        Err(e) => tracing::warn!(error = %e, "post node status"),
                    }
                }
                // Until the node has its pod CIDR, look again soon.
                let pause = if sent_cidr.is_none() {
                    cfg.lease_renew.min(Duration::from_secs(1))
                } else {
                    cfg.lease_renew
                };
                tokio::time::sleep(pause).await;
                since_status += pause;
                since_lease += pause;
            }
        });
    }

    // Every change to the node's pods, or every second, a sync pass.
    let pods: Api<Pod> = Api::all(client.clone());
    let wcfg = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let changed = Arc::new(tokio::sync::Notify::new());
    {
        let changed = changed.clone();
        tokio::spawn(async move {
            let mut s = reflector(writer, watcher(pods, wcfg))
                .default_backoff()
                .touched_objects()
                .boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "watch pods; retrying"),
                }
            }
        });
    }
    reader
        .wait_until_ready()
        .await
        .context("list the node's pods")?;
    let kubelet = Kubelet::new(cfg.clone(), client, cri);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        if let Err(e) = kubelet.sync_all(reader.state()).await {
            tracing::error!(error = %e, "sync pass");
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(cfg.sync_period) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Pods keep running: a restarted kubelet takes them over.
    tracing::info!("stopping; pods keep running");
    Ok(())
}
