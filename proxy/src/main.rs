//! skiff-proxy: the node's service proxy, and (`--pod-network host-gw`) the routes of
//! the pod network between nodes. Flags are named as kube-proxy names them.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use skiff_apimachinery::trace::Step;
use skiff_proxy::apply::{cleanup, Applier, Mode};
use skiff_proxy::metrics::Metrics;
use skiff_proxy::runner::{self, Kind, Runner};
use skiff_proxy::{model, programmed, routes, vxlan, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, error, info, warn};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProxyMode {
    Nftables,
    Iptables,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PodNetwork {
    /// Routes between nodes are someone else's business.
    None,
    /// Every other node's podCIDR is routed through its InternalIP (nodes share a link).
    HostGw,
    /// Every other node's podCIDR is routed through a VXLAN device to its InternalIP
    /// (nodes reach each other's InternalIP, over any number of hops).
    Vxlan,
}

#[derive(Parser, Debug)]
#[command(
    name = "skiff-proxy",
    version,
    about = "Skiff's service proxy (kube-proxy)"
)]
struct Args {
    /// The kubeconfig that reaches the API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "nftables")]
    proxy_mode: ProxyMode,
    /// The pods' address range: service traffic from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// This node's name, for the Local traffic policies (default: the host name).
    #[arg(long)]
    hostname_override: Option<String>,
    /// Remove this proxy's rules (both modes) and exit.
    #[arg(long)]
    cleanup: bool,
    /// At most one sync per this long, however fast changes come.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    min_sync_period: Duration,
    /// The kernel's rules are checked (and repaired where someone changed them) at
    /// least this often.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sync_period: Duration,
    /// /metrics (Prometheus text).
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: SocketAddr,
    /// /healthz and /livez.
    #[arg(long, default_value = "127.0.0.1:10256")]
    healthz_bind_address: SocketAddr,
    /// /healthz fails when no sync has succeeded, or a change has waited, this long
    /// (default: twice --sync-period).
    #[arg(long, value_parser = humantime::parse_duration)]
    healthz_timeout: Option<Duration>,
    /// The pod network between nodes: `host-gw` routes every other Node's podCIDR
    /// through its InternalIP (nodes on one link), `vxlan` through a VXLAN device to it
    /// (nodes anywhere they reach each other), following the Node objects.
    #[arg(long, value_enum, default_value = "none")]
    pod_network: PodNetwork,
    /// Serve cluster DNS on this node at this address (kube-dns' ClusterIP, usually
    /// 10.96.0.10, which the kubelet's --cluster-dns writes into pods' resolv.conf): it
    /// is put on the node's loopback and the Service holding it is left out of the
    /// rules, so pods' questions are answered on their own node.
    #[arg(long)]
    cluster_dns: Option<std::net::IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where names outside the cluster are asked (default: the nameservers of the
    /// node's /etc/resolv.conf), `IP` or `IP:PORT`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// Serve DNS here instead of CLUSTER_DNS:53 (tests; the address is not managed).
    #[arg(long)]
    dns_bind_address: Option<SocketAddr>,
    /// The other API servers of an HA control plane (https://HOST:PORT, comma-separated):
    /// connections go through a local front that fails over between them and the
    /// kubeconfig's.
    #[arg(long, value_delimiter = ',')]
    api_servers: Vec<String>,
    /// Log verbosity: 0-1 info (one line per sync that changed rules), 2-3 debug,
    /// 4+ trace. RUST_LOG, when set, takes precedence.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    /// Log lines as text or JSON.
    #[arg(long = "log-format", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn init_logs(args: &Args) {
    let level = match args.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,skiff_proxy={level}"))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if args.log_format == "json" {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
}

/// A reflector of `K`; `changed` is notified on every change, and `metrics` (for the
/// service rules' inputs) told a change is queued.
fn reflect<K>(
    api: Api<K>,
    changed: Vec<Arc<tokio::sync::Notify>>,
    metrics: Option<Arc<Metrics>>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    tokio::spawn(async move {
        let mut s = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(obj) => {
                    debug!(
                        kind,
                        namespace = obj.meta().namespace.as_deref().unwrap_or(""),
                        name = obj.meta().name.as_deref().unwrap_or(""),
                        "changed"
                    );
                    if let Some(m) = &metrics {
                        m.queued(Instant::now());
                    }
                    for c in &changed {
                        c.notify_one();
                    }
                }
                Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    });
    reader
}

/// /metrics on one address, /healthz and /livez on another (kube-proxy's ports).
async fn serve(args: &Args, metrics: Arc<Metrics>, bound: Duration) -> Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let m = metrics.clone();
    let metrics_app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = m.clone();
            async move { m.render() }
        }),
    );
    let health_app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    match m.health(Instant::now(), bound) {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
        .route("/livez", get(|| async { "ok\n" }));
    for (addr, app) in [
        (args.metrics_bind_address, metrics_app),
        (args.healthz_bind_address, health_app),
    ] {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                error!(%addr, error = %e, "HTTP server ended");
            }
        });
    }
    Ok(())
}

/// host-gw or vxlan: routes (and VXLAN entries) to the other nodes' pod CIDRs follow the
/// Node objects (within 100 ms of a change) and are checked every `period` (repairing
/// outside changes).
fn spawn_routes(client: kube::Client, me: String, period: Duration, vxlan: bool) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let nodes = reflect::<Node>(Api::all(client), vec![changed.clone()], None);
    tokio::spawn(async move {
        if let Err(e) = nodes.wait_until_ready().await {
            error!(error = %e, "list nodes; no pod routes");
            return;
        }
        loop {
            let state = nodes.state();
            let (n, done) = if vxlan {
                let wanted = vxlan::desired(&state, &me);
                let n = wanted.peers.len();
                (
                    n,
                    tokio::task::spawn_blocking(move || vxlan::reconcile(&wanted)).await,
                )
            } else {
                let wanted = routes::desired(&state, &me);
                let n = wanted.len();
                (
                    n,
                    tokio::task::spawn_blocking(move || routes::reconcile(&wanted)).await,
                )
            };
            match done {
                Ok(Ok(0)) => debug!(routes = n, "pod routes as wanted"),
                Ok(Ok(changed)) => info!(routes = n, changed, "pod routes programmed"),
                Ok(Err(e)) => error!(error = %e, "pod routes"),
                Err(e) => error!(error = %e, "pod routes task"),
            }
            tokio::select! {
                _ = changed.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
                _ = tokio::time::sleep(period) => {}
            }
        }
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logs(&args);
    let opts = Options {
        cluster_cidr: args.cluster_cidr.clone(),
        ..Options::default()
    };
    let (mode, other) = match args.proxy_mode {
        ProxyMode::Nftables => (Mode::Nftables, Mode::Iptables),
        ProxyMode::Iptables => (Mode::Iptables, Mode::Nftables),
    };
    if args.cleanup {
        for m in [Mode::Nftables, Mode::Iptables] {
            if let Err(e) = cleanup(m, &opts) {
                error!(mode = ?m, error = %e, "cleanup failed");
            }
        }
        return Ok(());
    }
    // Switching modes: the other mode's rules would still catch traffic.
    if let Err(e) = cleanup(other, &opts) {
        debug!(mode = ?other, error = %e, "nothing of the other mode to remove");
    }
    let kubeconfig = args
        .kubeconfig
        .as_ref()
        .context("--kubeconfig is required")?;
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let mut kcfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("use the kubeconfig")?;
    if !args.api_servers.is_empty() {
        let url =
            skiff_apimachinery::failover::front(&kcfg.cluster_url.to_string(), &args.api_servers)
                .await
                .context("--api-servers")?;
        info!(front = %url, servers = ?args.api_servers, "API servers behind a local front");
        kcfg.cluster_url = url.parse().context("front URL")?;
    }
    let client = kube::Client::try_from(kcfg)?;
    let node = match &args.hostname_override {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("read the host name")?
            .trim()
            .to_lowercase(),
    };
    let metrics = Arc::new(Metrics::default());
    let bound = args.healthz_timeout.unwrap_or(args.sync_period * 2);
    serve(&args, metrics.clone(), bound).await?;
    let changed = Arc::new(tokio::sync::Notify::new());
    // The zone of the cluster DNS follows the same Services and slices.
    let dns_changed = Arc::new(tokio::sync::Notify::new());
    let services = reflect::<Service>(
        Api::all(client.clone()),
        vec![changed.clone(), dns_changed.clone()],
        Some(metrics.clone()),
    );
    let client_for_routes = client.clone();
    let client_for_events = client.clone();
    let slices = reflect::<EndpointSlice>(
        Api::all(client),
        vec![changed.clone(), dns_changed.clone()],
        Some(metrics.clone()),
    );
    services.wait_until_ready().await.context("list services")?;
    slices
        .wait_until_ready()
        .await
        .context("list endpointslices")?;
    if args.pod_network != PodNetwork::None {
        let vxlan = args.pod_network == PodNetwork::Vxlan;
        spawn_routes(client_for_routes, node.clone(), args.sync_period, vxlan);
    }
    let dns_ip = args.cluster_dns;
    if let Some(ip) = dns_ip {
        // Services must not stop working because DNS could not start: said loudly,
        // and the rules go on.
        if let Err(e) = start_dns(&args, ip, services.clone(), slices.clone(), dns_changed).await {
            error!(error = format!("{e:#}"), "cluster DNS not served");
        }
    }
    info!(?mode, node, pod_network = ?args.pod_network, "started");
    let applier = Arc::new(Mutex::new(Applier::new(mode, opts)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let tracker = Arc::new(Mutex::new(programmed::Tracker::default()));
    let sync = move |kind: Kind| {
        let (applier, metrics) = (applier.clone(), metrics.clone());
        let slice_state = slices.state();
        let mut ports = model::build(&services.state(), &slice_state, Some(&node));
        // The cluster DNS address is answered on the node itself.
        if let Some(std::net::IpAddr::V4(ip)) = dns_ip {
            ports.retain(|p| p.cluster_ip != Some(ip));
        }
        let (tracker, client, node) = (tracker.clone(), client_for_events.clone(), node.clone());
        async move {
            let started = Instant::now();
            let started_at = SystemTime::now();
            let r = tokio::task::spawn_blocking(move || {
                let mut a = applier.lock().unwrap_or_else(|p| p.into_inner());
                let r = match kind {
                    Kind::Sync => a.sync(&ports),
                    Kind::Resync => a.resync(&ports),
                };
                let eps = ports.iter().map(|p| p.endpoints.len()).sum::<usize>();
                r.map(|o| (o, ports.len(), eps))
            })
            .await;
            let took = started.elapsed();
            match r {
                Ok(Ok((o, n, eps))) => {
                    metrics.synced(started, took, Some((n, eps)));
                    let due = tracker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .due(&slice_state, SystemTime::now());
                    if !due.is_empty() {
                        let step = Step {
                            start: started_at,
                            duration: took,
                            detail: Some(format!("{kind:?}: {n} service ports, {eps} endpoints")),
                        };
                        tokio::spawn(announce_all(client, node, due, step));
                    }
                    if o.changed() {
                        info!(
                            ?kind,
                            service_ports = n,
                            chains = o.chains,
                            elements = o.elements,
                            read_back = o.read_back,
                            ms = took.as_secs_f64() * 1000.0,
                            "programmed"
                        );
                    } else {
                        debug!(?kind, ms = took.as_secs_f64() * 1000.0, "nothing to change");
                    }
                }
                Ok(Err(e)) => {
                    metrics.synced(started, took, None);
                    error!(?kind, error = %e, "sync failed; the next one reads the rules back");
                }
                Err(e) => error!(error = %e, "sync task failed"),
            }
        }
    };
    runner::drive(
        Runner::new(args.min_sync_period, args.sync_period, Instant::now()),
        changed,
        stop,
        sync,
    )
    .await;
    // Like kube-proxy, rules stay on exit: services keep working across a restart.
    info!("stopping; rules stay in place");
    Ok(())
}

/// Cluster DNS on this node: the zone follows the Services and EndpointSlices, the
/// server answers at `ip`:53 (or --dns-bind-address).
async fn start_dns(
    args: &Args,
    ip: std::net::IpAddr,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changed: Arc<tokio::sync::Notify>,
) -> Result<()> {
    let bind = match args.dns_bind_address {
        Some(a) => a,
        None => {
            tokio::task::spawn_blocking(move || skiff_proxy::dns::hold_address(ip))
                .await?
                .with_context(|| format!("put {ip} on the loopback"))?;
            SocketAddr::new(ip, 53)
        }
    };
    let upstream: Vec<SocketAddr> = if args.dns_upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        skiff_proxy::dns::upstream_of(&text)
    } else {
        args.dns_upstream
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| {
                        u.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .with_context(|| format!("--dns-upstream {u:?} is not IP or IP:PORT"))
            })
            .collect::<Result<_>>()?
    };
    // Never ourselves: a node whose resolv.conf names the cluster address would loop.
    let upstream: Vec<SocketAddr> = upstream
        .into_iter()
        .filter(|u| u.ip() != ip && *u != bind)
        .collect();
    let zone = skiff_proxy::dns::follow(services, slices, args.cluster_domain.clone(), changed);
    let handler = skiff_proxy::dns::server::Handler {
        zone,
        upstream: upstream.clone(),
    };
    skiff_proxy::dns::server::serve(bind, handler)
        .await
        .with_context(|| format!("serve DNS on {bind}"))?;
    info!(%bind, domain = %args.cluster_domain, ?upstream, "cluster DNS");
    Ok(())
}

/// Post the RulesProgrammed events of one sync (best effort: a lost one is logged).
async fn announce_all(
    client: kube::Client,
    node: String,
    due: Vec<programmed::Change>,
    step: Step,
) {
    for c in &due {
        if let Err(e) = programmed::announce(client.clone(), &node, c, &step).await {
            warn!(namespace = %c.namespace, slice = %c.name, error = %e, "post RulesProgrammed");
        }
    }
}
