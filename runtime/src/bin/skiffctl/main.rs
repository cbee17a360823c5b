//! `skiffctl`: a crictl-style debugging client for any CRI v1 runtime socket
//! (skiff-runtime serve by default; containerd works as well).

mod args;
mod commands;
mod output;
mod stream;

use args::*;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "skiffctl",
    version,
    about = "Debug CRI runtimes (crictl-style) over a unix socket"
)]
pub struct Cli {
    /// CRI endpoint: a socket path or unix:///path.
    #[arg(
        short = 'r',
        long = "runtime-endpoint",
        global = true,
        env = "CONTAINER_RUNTIME_ENDPOINT",
        default_value = "unix:///run/skiff/cri.sock"
    )]
    pub endpoint: String,
    /// Image endpoint (default: the runtime endpoint).
    #[arg(long = "image-endpoint", global = true, env = "IMAGE_SERVICE_ENDPOINT")]
    pub image_endpoint: Option<String>,
    /// Per-request timeout, e.g. 2s, 1m.
    #[arg(long = "request-timeout", global = true, default_value = "2m", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    #[command(subcommand)]
    pub command: Command,
}

/// Selection and output flags shared by the list commands (pods, ps).
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only names containing this.
    #[arg(long)]
    pub name: Option<String>,
    /// key=value (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Only ids starting with this.
    #[arg(long)]
    pub id: Option<String>,
    /// Print ids only.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(short, long, default_value = "table")]
    pub output: String,
    /// Show full ids.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runtime name and versions.
    Version,
    /// Runtime status and configuration.
    Info(InfoArgs),
    /// List pod sandboxes.
    Pods(PodsArgs),
    /// List containers (running only unless -a).
    Ps(PsArgs),
    /// List images.
    #[command(alias = "img")]
    Images(ImagesArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Import an OCI layout or docker-archive tarball into the local image store.
    Import(ImportArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Run a pod sandbox from a JSON or YAML PodSandboxConfig.
    Runp(RunpArgs),
    /// Create a container in a pod: POD-ID container-config pod-config.
    Create(CreateArgs),
    /// Run a pod and one container in it: container-config pod-config.
    Run(RunArgs),
    /// Start created containers.
    Start(StartArgs),
    /// Stop containers.
    Stop(StopArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Stop pod sandboxes.
    Stopp(StoppArgs),
    /// Remove pod sandboxes.
    Rmp(RmpArgs),
    /// Container status.
    Inspect(InspectArgs),
    /// Pod sandbox status.
    Inspectp(InspectpArgs),
    /// Image status.
    Inspecti(InspectiArgs),
    /// Print a container's log.
    Logs(LogsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Attach to a running container's output (and stdin with -i).
    Attach(AttachArgs),
    /// Change a running container's resources.
    Update(UpdateArgs),
    /// Reopen a container's log file (after rotating it).
    #[command(name = "reopen-log")]
    ReopenLog(ReopenLogArgs),
    /// Stream container and pod events (created, started, stopped, deleted) until ^C.
    Events(EventsArgs),
    /// Resource usage of containers.
    Stats(StatsArgs),
    /// Pod resource usage.
    Statsp(StatspArgs),
    /// Forward a local port to a pod: POD [LOCAL:]REMOTE (LOCAL 0 picks a free port).
    PortForward(PortForwardArgs),
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(commands::execute(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("skiffctl: {e:#}");
            std::process::exit(1);
        }
    }
}
