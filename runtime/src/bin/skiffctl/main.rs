//! `skiffctl`: a crictl-style debugging client for any CRI v1 runtime socket
//! (skiff-runtime serve by default; containerd works as well).

mod commands;
mod output;
mod stream;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    Info {
        #[arg(short, long, default_value = "json")]
        output: String,
    },
    /// List pod sandboxes.
    Pods {
        #[arg(long)]
        namespace: Option<String>,
        /// ready or notready.
        #[arg(short, long)]
        state: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// List containers (running only unless -a).
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        pod: Option<String>,
        /// created, running, exited or unknown.
        #[arg(short, long)]
        state: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// List images.
    #[command(alias = "img")]
    Images {
        image: Option<String>,
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long, default_value = "table")]
        output: String,
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Pull an image from a registry.
    Pull {
        image: String,
        /// user:password for the registry.
        #[arg(long)]
        creds: Option<String>,
        #[arg(long)]
        auth: Option<String>,
        /// Pull straight into this image store (no server needed), showing progress.
        #[arg(long = "image-dir")]
        image_dir: Option<PathBuf>,
        /// With --image-dir: plain HTTP (loopback registries always are).
        #[arg(long)]
        insecure: bool,
    },
    /// Import an OCI layout or docker-archive tarball into the local image store.
    Import {
        tar: PathBuf,
        /// Name for images the archive does not name.
        #[arg(long)]
        name: Option<String>,
        /// The runtime's image store (skiff-runtime serve --image-dir).
        #[arg(long = "image-dir", default_value = "/var/lib/skiff/images")]
        image_dir: PathBuf,
    },
    /// Remove images.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Run a pod sandbox from a JSON or YAML PodSandboxConfig.
    Runp {
        config: PathBuf,
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Create a container in a pod: POD-ID container-config pod-config.
    Create {
        pod: String,
        container_config: PathBuf,
        pod_config: PathBuf,
        /// Pull the image first if it is missing.
        #[arg(long = "with-pull")]
        with_pull: bool,
    },
    /// Run a pod and one container in it: container-config pod-config.
    Run {
        container_config: PathBuf,
        pod_config: PathBuf,
        #[arg(long = "with-pull")]
        with_pull: bool,
    },
    /// Start created containers.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop containers.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "timeout", default_value_t = 0)]
        grace: i64,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Stop running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(short, long)]
        all: bool,
        ids: Vec<String>,
    },
    /// Stop pod sandboxes.
    Stopp {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove pod sandboxes.
    Rmp {
        #[arg(short, long)]
        force: bool,
        #[arg(short, long)]
        all: bool,
        ids: Vec<String>,
    },
    /// Container status.
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, default_value = "json")]
        output: String,
    },
    /// Pod sandbox status.
    Inspectp {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(short, long, default_value = "json")]
        output: String,
    },
    /// Image status.
    Inspecti {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short, long, default_value = "json")]
        output: String,
    },
    /// Print a container's log.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end (all when negative).
        #[arg(long, default_value_t = -1)]
        tail: i64,
        #[arg(long)]
        timestamps: bool,
    },
    /// Run a command in a running container.
    Exec {
        #[arg(short, long)]
        interactive: bool,
        #[arg(short = 't', long)]
        tty: bool,
        /// How the stream travels (crictl's flag).
        #[arg(long, value_enum, default_value = "websocket")]
        transport: stream::Transport,
        /// Run through ExecSync (no streaming), as crictl exec -s; implied by --timeout.
        #[arg(short, long)]
        sync: bool,
        /// Seconds before the command is killed (0: no limit; implies --sync).
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Attach to a running container's output (and stdin with -i).
    Attach {
        #[arg(short, long)]
        interactive: bool,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(long, value_enum, default_value = "websocket")]
        transport: stream::Transport,
        id: String,
    },
    /// Change a running container's resources.
    Update {
        /// Memory limit in bytes (suffixes k, m, g allowed).
        #[arg(long)]
        memory: Option<String>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<i64>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<i64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Reopen a container's log file (after rotating it).
    #[command(name = "reopen-log")]
    ReopenLog { id: String },
    /// Stream container and pod events (created, started, stopped, deleted) until ^C.
    Events {
        #[arg(short, long, default_value = "json")]
        output: String,
    },
    /// Resource usage of containers.
    Stats {
        #[arg(short, long)]
        all: bool,
        id: Option<String>,
        #[arg(short, long)]
        pod: Option<String>,
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Pod resource usage.
    Statsp {
        id: Option<String>,
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Forward a local port to a pod: POD [LOCAL:]REMOTE (LOCAL 0 picks a free port).
    PortForward {
        #[arg(long, value_enum, default_value = "websocket")]
        transport: stream::Transport,
        pod: String,
        port: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(commands::run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("skiffctl: {e:#}");
            std::process::exit(1);
        }
    }
}
