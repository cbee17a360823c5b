//! skiff-proxy: the node's service proxy. Flags are named as kube-proxy names them.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use skiff_proxy::apply::{cleanup, Applier, Mode};
use skiff_proxy::{model, Options};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProxyMode {
    Nftables,
    Iptables,
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
    /// Rules are rewritten at least this often (repairing outside changes).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sync_period: Duration,
}

fn reflect<K>(api: Api<K>, changed: Arc<tokio::sync::Notify>) -> Store<K>
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
    tokio::spawn(async move {
        let mut s = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => eprintln!("skiff-proxy: watch: {e}"),
            }
        }
    });
    reader
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
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
                eprintln!("skiff-proxy: cleanup {m:?}: {e}");
            }
        }
        return Ok(());
    }
    // Switching modes: the other mode's rules would still catch traffic.
    let _ = cleanup(other, &opts);
    let kubeconfig = args
        .kubeconfig
        .as_ref()
        .context("--kubeconfig is required")?;
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("use the kubeconfig")?,
    )?;
    let node = match &args.hostname_override {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("read the host name")?
            .trim()
            .to_lowercase(),
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let services = reflect::<Service>(Api::all(client.clone()), changed.clone());
    let slices = reflect::<EndpointSlice>(Api::all(client), changed.clone());
    services.wait_until_ready().await.context("list services")?;
    slices
        .wait_until_ready()
        .await
        .context("list endpointslices")?;
    eprintln!("skiff-proxy: {mode:?} mode");
    let mut applier = Some(Applier::new(mode, opts));
    let mut last_full = Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let started = Instant::now();
        let ports = model::build(&services.state(), &slices.state(), Some(&node));
        let mut a = applier.take().expect("applier");
        if last_full.elapsed() >= args.sync_period {
            a.invalidate();
            last_full = Instant::now();
        }
        let (a, r) = tokio::task::spawn_blocking(move || {
            let r = a.sync(&ports).map(|changed| (changed, ports.len()));
            (a, r)
        })
        .await?;
        applier = Some(a);
        match r {
            Ok((true, n)) => eprintln!(
                "skiff-proxy: programmed {n} service ports in {:?}",
                started.elapsed()
            ),
            Ok((false, _)) => {}
            Err(e) => eprintln!("skiff-proxy: sync: {e}"),
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(args.sync_period) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        // Changes that come in a burst are taken together.
        let wait = args.min_sync_period.saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
    }
    // Like kube-proxy, rules stay on exit: services keep working across a restart.
    Ok(())
}
