//! skiff-control: the control plane in one binary: the API server, the controller
//! manager and the scheduler on the embedded store.

use clap::{Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "skiff-control",
    version,
    about = "Skiff's control plane: API server, store, scheduler, controllers"
)]
struct Cli {
    /// Keep cluster state in etcd v3 (comma-separated client URLs) instead of the
    /// embedded store; several API servers can then serve one cluster.
    #[arg(long = "etcd-servers", value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// CA that signs the etcd members' serving certificates (https:// servers).
    #[arg(long = "etcd-cafile")]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate to present to etcd.
    #[arg(long = "etcd-certfile")]
    etcd_certfile: Option<PathBuf>,
    /// Key of --etcd-certfile.
    #[arg(long = "etcd-keyfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Log verbosity as kube components count it: 0-1 info, 2-3 debug (controller and
    /// scheduler decisions), 4+ trace. RUST_LOG, when set, takes precedence.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    /// Log lines as text or JSON.
    #[arg(long = "log-format", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Where the store and the cluster PKI live.
    #[arg(
        long = "data-dir",
        global = true,
        default_value = "/var/lib/skiff/control"
    )]
    data_dir: PathBuf,
    /// Address to serve on (HTTPS, and plain HTTP when --insecure-port is given).
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// More addresses to serve HTTPS on, on the same port (a VM's host-forwarded link).
    #[arg(long = "also-bind-address")]
    also_bind_address: Vec<IpAddr>,
    /// HTTPS port (client certificates from the cluster CA authenticate users).
    #[arg(long = "secure-port", default_value_t = 6443)]
    secure_port: u16,
    /// Also serve plain HTTP without authentication on this port (loopback only; tests).
    #[arg(long = "insecure-port")]
    insecure_port: Option<u16>,
    /// Extra names or addresses for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// A node whose Lease is older than this is NotReady (e.g. 40s).
    #[arg(long = "node-monitor-grace-period", value_parser = humantime::parse_duration)]
    node_monitor_grace_period: Option<std::time::Duration>,
    /// Seconds pods tolerate an unreachable node before eviction.
    #[arg(long = "default-unreachable-toleration-seconds")]
    default_unreachable_toleration_seconds: Option<u64>,
    /// Pod CIDRs for nodes are carved out of this range.
    #[arg(long = "cluster-cidr", default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(long = "node-cidr-mask-size", default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Give nodes pod CIDRs (node IPAM).
    #[arg(long = "allocate-node-cidrs", default_value_t = true, action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// Run the controllers only while holding their Lease (kube-system/skiff-controller-manager,
    /// kube-system/skiff-scheduler), so several instances can share one store.
    #[arg(long = "leader-elect", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Run the controller manager in this process.
    #[arg(long = "controllers", default_value_t = true, action = clap::ArgAction::Set)]
    controllers: bool,
    /// Run the scheduler in this process.
    #[arg(long = "scheduler", default_value_t = true, action = clap::ArgAction::Set)]
    scheduler: bool,
    /// Drop store history older than this (kube-apiserver's default: 5m; 0 turns it off).
    #[arg(long = "etcd-compaction-interval", default_value = "5m", value_parser = humantime::parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a kubeconfig (cluster CA and a client certificate embedded): the admin's
    /// (group system:masters), or with --user one for that user and its --group(s),
    /// whose rights RBAC decides (a node: --user system:node:NAME --group system:nodes).
    Kubeconfig {
        /// API server URL written into the kubeconfig.
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
        /// The user's name (the certificate's CN).
        #[arg(long)]
        user: Option<String>,
        /// A group of the user (the certificate's O; repeatable).
        #[arg(long = "group", requires = "user")]
        groups: Vec<String>,
    },
    /// Bootstrap tokens for joining nodes (kubeadm token): `create` prints a token and the
    /// line a node joins with; `list`; `delete ID`.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        /// The API server to write the token through (with the admin's credentials).
        #[arg(long, global = true, default_value = "https://127.0.0.1:6443")]
        server: String,
    },
    /// Write an etcd member's certificates from the cluster CA into --out (kubeadm's etcd
    /// phase): ca.crt, server.crt/.key (clients), peer.crt/.key (other members), and
    /// apiserver-etcd-client.crt/.key (skiff-control's --etcd-certfile/--etcd-keyfile).
    EtcdCerts {
        /// The member's name.
        #[arg(long)]
        name: String,
        /// Its addresses and other names (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Write a kubelet's serving certificate for a node (kubelet.crt, kubelet.key) and
    /// the cluster CA (ca.crt, to verify the API server's client certificate) into --out.
    KubeletCerts {
        /// The node's name.
        #[arg(long)]
        node: String,
        /// Its addresses and other names (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token valid for --ttl (0: forever); TOKEN (`[a-z0-9]{6}.[a-z0-9]{16}`, as
    /// kubeadm's) when it was chosen beforehand, e.g. by a Vagrantfile, else a random one.
    Create {
        token: Option<String>,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    Delete {
        /// The token's ID (or the whole token).
        token: String,
    },
}

/// Write PEM files (name, text, mode) into `out`, made if missing.
fn write_files(out: &std::path::Path, files: &[(&str, &str, u32)]) {
    use std::os::unix::fs::OpenOptionsExt;
    for (name, text, mode) in files {
        let p = out.join(name);
        std::fs::create_dir_all(out)
            .and_then(|_| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(*mode)
                    .open(&p)?;
                std::io::Write::write_all(&mut f, text.as_bytes())
            })
            .unwrap_or_else(|e| fail(format!("write {}: {e}", p.display())));
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("skiff-control: {msg}");
    std::process::exit(1)
}

/// etcd may come up after the API server (a cluster booting, a member restarting): say
/// why it cannot be reached and try again, with back-off up to 10 s, as long as it takes.
async fn connect_etcd(
    servers: &[String],
    tls: Option<skiff_control::store::EtcdTls>,
) -> skiff_control::store::Store {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        let eps = servers.to_vec();
        let tls = tls.clone();
        // The client blocks while it connects: off the async workers.
        match tokio::task::spawn_blocking(move || {
            skiff_control::store::Store::etcd(&eps, tls.as_ref())
        })
        .await
        {
            Ok(Ok(store)) => return store,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?delay, "etcd is not reachable yet; retrying")
            }
            Err(e) => fail(format!("connect to etcd: {e}")),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}

/// tracing to stderr at the level -v asks for (RUST_LOG overrides), as text or JSON.
fn init_logs(cli: &Cli) {
    let level = match cli.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Libraries speak at their own debug level; ours follows -v.
        tracing_subscriber::EnvFilter::new(format!("warn,skiff_control={level}"))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if cli.log_format == "json" {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logs(&cli);
    let mut sans = cli.tls_san.clone();
    for a in std::iter::once(&cli.bind_address).chain(&cli.also_bind_address) {
        if !a.is_unspecified() {
            sans.push(a.to_string());
        }
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        sans.push(h.trim().to_string());
    }
    let pki = skiff_control::pki::Pki::ensure(&cli.data_dir.join("pki"), &sans)
        .unwrap_or_else(|e| fail(e));
    match &cli.command {
        Some(Command::Kubeconfig {
            server, user: None, ..
        }) => {
            print!("{}", pki.kubeconfig(server));
            return;
        }
        Some(Command::Kubeconfig {
            server,
            user: Some(user),
            groups,
        }) => {
            let (cert, key) = pki.issue_client(user, groups).unwrap_or_else(|e| fail(e));
            print!("{}", pki.kubeconfig_with(server, user, &cert, &key));
            return;
        }
        Some(Command::Token { action, server }) => {
            let admin = skiff_control::token::Admin::new(&pki, server).unwrap_or_else(|e| fail(e));
            match action {
                TokenAction::Create {
                    token,
                    ttl,
                    description,
                } => {
                    let ttl = (!ttl.is_zero()).then_some(*ttl);
                    let token = admin
                        .create(token.as_deref(), ttl, description)
                        .unwrap_or_else(|e| fail(e));
                    let hash = pki.ca_hash().unwrap_or_else(|e| fail(e));
                    println!("{token}");
                    eprintln!(
                        "join a node with:\n  skiff-kubelet --server {server} --token {token} --ca-cert-hash {hash} ..."
                    );
                }
                TokenAction::List => {
                    println!("{:<8} {:<26} DESCRIPTION", "TOKEN", "EXPIRES");
                    for (id, exp, desc) in admin.list().unwrap_or_else(|e| fail(e)) {
                        println!("{id:<8} {exp:<26} {desc}");
                    }
                }
                TokenAction::Delete { token } => {
                    admin.delete(token).unwrap_or_else(|e| fail(e));
                    println!(
                        "bootstrap token {:?} deleted",
                        token.split('.').next().unwrap_or("")
                    );
                }
            }
            return;
        }
        Some(Command::EtcdCerts { name, sans, out }) => {
            let [server, peer, client] = pki.issue_etcd(name, sans).unwrap_or_else(|e| fail(e));
            write_files(
                out,
                &[
                    ("ca.crt", &pki.ca_cert, 0o644),
                    ("server.crt", &server.0, 0o644),
                    ("server.key", &server.1, 0o600),
                    ("peer.crt", &peer.0, 0o644),
                    ("peer.key", &peer.1, 0o600),
                    ("apiserver-etcd-client.crt", &client.0, 0o644),
                    ("apiserver-etcd-client.key", &client.1, 0o600),
                ],
            );
            return;
        }
        Some(Command::KubeletCerts { node, sans, out }) => {
            let (cert, key) = pki
                .issue_kubelet_serving(node, sans)
                .unwrap_or_else(|e| fail(e));
            write_files(
                out,
                &[
                    ("kubelet.key", &key, 0o600),
                    ("kubelet.crt", &cert, 0o644),
                    ("ca.crt", &pki.ca_cert, 0o644),
                ],
            );
            return;
        }
        None => {}
    }
    if cli.insecure_port.is_some() && !cli.bind_address.is_loopback() {
        fail("--insecure-port serves without authentication: only with a loopback --bind-address");
    }
    let store = if cli.etcd_servers.is_empty() {
        skiff_control::store::Store::open(&cli.data_dir).unwrap_or_else(|e| fail(e))
    } else {
        let tls = (cli.etcd_cafile.is_some() || cli.etcd_certfile.is_some()).then(|| {
            skiff_control::store::EtcdTls {
                ca: cli.etcd_cafile.clone(),
                cert: cli.etcd_certfile.clone(),
                key: cli.etcd_keyfile.clone(),
            }
        });
        connect_etcd(&cli.etcd_servers, tls).await
    };
    let mut cfg = skiff_control::controllers::Config::default();
    if let Some(g) = cli.node_monitor_grace_period {
        cfg.node_grace = g;
    }
    if let Some(s) = cli.default_unreachable_toleration_seconds {
        cfg.eviction_default = std::time::Duration::from_secs(s);
    }
    if skiff_control::controllers::nodeipam::parse_cidr(&cli.cluster_cidr).is_none() {
        fail(format!(
            "--cluster-cidr {:?} is not an IPv4 CIDR",
            cli.cluster_cidr
        ));
    }
    cfg.cluster_cidr = cli.allocate_node_cidrs.then(|| cli.cluster_cidr.clone());
    cfg.node_cidr_mask = cli.node_cidr_mask_size;
    cfg.leader_elect = cli.leader_elect;
    cfg.controllers = cli.controllers;
    cfg.scheduler = cli.scheduler;
    if !cli.etcd_compaction_interval.is_zero() {
        skiff_control::store::compactor::start(store.clone(), cli.etcd_compaction_interval);
    }
    // Passes over many objects allocate and free in bursts; glibc keeps what they freed
    // mapped. Give it back now and then, so RSS follows the objects held.
    std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { libc::malloc_trim(0) };
        })
        .unwrap_or_else(|e| fail(format!("spawn: {e}")));
    let kubelet = skiff_control::apiserver::kubelet::KubeletClient::new(&pki)
        .unwrap_or_else(|e| fail(format!("kubelet client: {e}")));
    // The router makes the system namespaces first: the controllers' Leases live in
    // kube-system and are written through the API, which admits them only there.
    let router = skiff_control::apiserver::router_with(store.clone(), Some(kubelet));
    let store_for_tokens = store.clone();
    // Certificates for joining nodes are signed with the cluster CA.
    cfg.signer = Some(std::sync::Arc::new(pki.clone()));
    // The controller manager and the scheduler run in this process on the same store.
    skiff_control::controllers::start_with(store, cfg);
    let tls = skiff_control::apiserver::tls::server_config(&pki).unwrap_or_else(|e| fail(e));
    let addr = SocketAddr::new(cli.bind_address, cli.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(format!("listen on {addr}: {e}")));
    eprintln!(
        "skiff-control: serving the Kubernetes API on https://{} (CA {})",
        listener.local_addr().unwrap(),
        pki.dir.join("ca.crt").display()
    );
    // Bootstrap tokens (kubeadm join, skiff-kubelet --token) as bearer tokens.
    let tokens: skiff_control::apiserver::tls::TokenAuthenticator = {
        let store = store_for_tokens.clone();
        std::sync::Arc::new(move |t: &str| {
            skiff_control::apiserver::authn::bootstrap_token(&store, t).map_err(|e| e.to_string())
        })
    };
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(cli.secure_port);
    for ip in &cli.also_bind_address {
        let addr = SocketAddr::new(*ip, port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| fail(format!("listen on {addr}: {e}")));
        eprintln!("skiff-control: also serving the Kubernetes API on https://{addr}");
        tokio::spawn(skiff_control::apiserver::tls::serve_with_tokens(
            l,
            router.clone(),
            tls.clone(),
            Some(tokens.clone()),
        ));
    }
    let secure = tokio::spawn(skiff_control::apiserver::tls::serve_with_tokens(
        listener,
        router.clone(),
        tls,
        Some(tokens),
    ));
    if let Some(port) = cli.insecure_port {
        let addr = SocketAddr::new(cli.bind_address, port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| fail(format!("listen on {addr}: {e}")));
        eprintln!(
            "skiff-control: serving the Kubernetes API without authentication on http://{}",
            l.local_addr().unwrap()
        );
        axum::serve(l, router).await.unwrap_or_else(|e| fail(e));
    } else {
        let _ = secure.await;
    }
}
