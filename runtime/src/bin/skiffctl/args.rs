//! Each command's arguments (one struct per command, as its function takes them).

use crate::{stream, ListArgs};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[arg(short, long, default_value = "json")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct PodsArgs {
    #[arg(long)]
    pub namespace: Option<String>,
    /// ready or notready.
    #[arg(short, long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    #[arg(short, long)]
    pub all: bool,
    #[arg(short, long)]
    pub pod: Option<String>,
    /// created, running, exited or unknown.
    #[arg(short, long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    pub image: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(short, long, default_value = "table")]
    pub output: String,
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    pub image: String,
    /// user:password for the registry.
    #[arg(long)]
    pub creds: Option<String>,
    #[arg(long)]
    pub auth: Option<String>,
    /// Pull straight into this image store (no server needed), showing progress.
    #[arg(long = "image-dir")]
    pub image_dir: Option<PathBuf>,
    /// With --image-dir: plain HTTP (loopback registries always are).
    #[arg(long)]
    pub insecure: bool,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    pub tar: PathBuf,
    /// Name for images the archive does not name.
    #[arg(long)]
    pub name: Option<String>,
    /// The runtime's image store (skiff-runtime serve --image-dir).
    #[arg(long = "image-dir", default_value = "/var/lib/skiff/images")]
    pub image_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunpArgs {
    pub config: PathBuf,
    #[arg(long)]
    pub runtime: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    pub pod: String,
    pub container_config: PathBuf,
    pub pod_config: PathBuf,
    /// Pull the image first if it is missing.
    #[arg(long = "with-pull")]
    pub with_pull: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    pub container_config: PathBuf,
    pub pod_config: PathBuf,
    #[arg(long = "with-pull")]
    pub with_pull: bool,
}

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "timeout", default_value_t = 0)]
    pub grace: i64,
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Stop running containers first.
    #[arg(short, long)]
    pub force: bool,
    #[arg(short, long)]
    pub all: bool,
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StoppArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmpArgs {
    #[arg(short, long)]
    pub force: bool,
    #[arg(short, long)]
    pub all: bool,
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(short, long, default_value = "json")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct InspectpArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(short, long, default_value = "json")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct InspectiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    #[arg(short, long, default_value = "json")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    pub id: String,
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from the end (all when negative).
    #[arg(long, default_value_t = -1)]
    pub tail: i64,
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short = 't', long)]
    pub tty: bool,
    /// How the stream travels (crictl's flag).
    #[arg(long, value_enum, default_value = "websocket")]
    pub transport: stream::Transport,
    /// Run through ExecSync (no streaming), as crictl exec -s; implied by --timeout.
    #[arg(short, long)]
    pub sync: bool,
    /// Seconds before the command is killed (0: no limit; implies --sync).
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short = 't', long)]
    pub tty: bool,
    #[arg(long, value_enum, default_value = "websocket")]
    pub transport: stream::Transport,
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit in bytes (suffixes k, m, g allowed).
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<i64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ReopenLogArgs {
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    #[arg(short, long, default_value = "json")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    #[arg(short, long)]
    pub all: bool,
    pub id: Option<String>,
    #[arg(short, long)]
    pub pod: Option<String>,
    #[arg(short, long, default_value = "table")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct StatspArgs {
    pub id: Option<String>,
    #[arg(short, long, default_value = "table")]
    pub output: String,
}

#[derive(clap::Args, Debug)]
pub struct PortForwardArgs {
    #[arg(long, value_enum, default_value = "websocket")]
    pub transport: stream::Transport,
    pub pod: String,
    pub port: String,
}
