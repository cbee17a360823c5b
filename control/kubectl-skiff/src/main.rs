//! `kubectl skiff`: a kubectl plugin (also runs standalone) for what Skiff records
//! beyond Kubernetes. `trace pod/NAME` prints the pod's path with each step's start and
//! duration as measured by the component that did it; `--watch` follows a pod while
//! it starts.

mod render;
mod trace;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "kubectl-skiff", about = "Skiff's kubectl plugin")]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace of the object.
    #[arg(short, long, global = true, default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a pod's path through the cluster, step by step, with measured durations.
    Trace {
        /// pod/NAME (or NAME).
        target: String,
        /// Keep printing as the pod starts, until every step happened or --timeout.
        #[arg(short, long)]
        watch: bool,
        /// How long --watch follows the pod.
        #[arg(long, default_value = "5m", value_parser = humantime_secs)]
        timeout: Duration,
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        output: String,
    },
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration {s:?} (use s, m or h)")),
    }
}

async fn client(cli: &Cli) -> Result<kube::Client> {
    let opts = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).with_context(|| format!("read {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts).await?
        }
        None => kube::Config::from_kubeconfig(&opts).await?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn events_about(uid: &str) -> ListParams {
    ListParams::default().fields(&format!("involvedObject.uid={uid}"))
}

/// Everything the trace of one pod reads, fetched now.
async fn fetch(client: &kube::Client, ns: &str, name: &str) -> Result<trace::Trace> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("get pod {ns}/{name}"))?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let pod_events = events.list(&events_about(&uid)).await?.items;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet");
    let owner_events = match owner {
        Some(o) => {
            // The owner must still be the one that made this pod.
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get_opt(&o.name)
                .await?;
            match rs.and_then(|r| r.metadata.uid).filter(|u| *u == o.uid) {
                Some(u) => events.list(&events_about(&u)).await?.items,
                None => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let slices: Vec<EndpointSlice> = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| {
            s.endpoints
                .iter()
                .any(|e| e.target_ref.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
        })
        .collect();
    let mut slice_events = Vec::new();
    for s in &slices {
        if let Some(u) = &s.metadata.uid {
            slice_events.extend(events.list(&events_about(u)).await?.items);
        }
    }
    Ok(trace::assemble(&trace::Inputs {
        pod: &pod,
        pod_events: &pod_events,
        owner_events: &owner_events,
        slices: &slices,
        slice_events: &slice_events,
    }))
}

fn print(t: &trace::Trace, output: &str) -> Result<()> {
    match output {
        "table" => print!("{}", render::table(t)),
        "json" => println!("{}", serde_json::to_string_pretty(&render::json(t))?),
        o => bail!("unknown output format {o:?} (table or json)"),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let client = client(&cli).await?;
    match &cli.command {
        Command::Trace {
            target,
            watch,
            timeout,
            output,
        } => {
            let name = match target.split_once('/') {
                Some(("pod" | "pods" | "po", n)) => n,
                Some((kind, _)) => bail!("only pods can be traced, not {kind}"),
                None => target.as_str(),
            };
            if !["table", "json"].contains(&output.as_str()) {
                bail!("unknown output format {output:?} (table or json)");
            }
            let end = Instant::now() + *timeout;
            let mut last = None;
            loop {
                let t = fetch(&client, &cli.namespace, name).await?;
                if last.as_ref() != Some(&t) {
                    print(&t, output)?;
                }
                if !watch || t.complete() || Instant::now() >= end {
                    break;
                }
                last = Some(t);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
    }
    Ok(())
}
