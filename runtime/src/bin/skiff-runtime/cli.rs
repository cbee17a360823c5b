//! Command-line definition, mirroring runc's commands and flags.
//! Options may come before or after the container id, as with runc.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "skiff-runtime",
    version,
    about = "Skiff's OCI container runtime (runc-compatible)"
)]
pub struct Cli {
    /// Root directory for container state.
    #[arg(long, global = true, default_value = "/run/skiff-runtime")]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (not supported: refused with an error).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// With `spec`: write a rootless config. Elsewhere accepted for runc compatibility.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// Path to the bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container init's pid to this file.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Pass this many extra fds (from 3 on) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Use MS_MOVE + chroot instead of pivot_root (for ramfs roots).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container; its process waits until `start`.
    Create {
        id: String,
        #[command(flatten)]
        args: CreateArgs,
    },
    /// Start a created container's user process.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to a container (default SIGTERM).
    Kill {
        id: String,
        signal: Option<String>,
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container and its resources.
    Delete {
        id: String,
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
    },
    /// Create and start a container, wait for it and exit with its status.
    Run {
        id: String,
        #[command(flatten)]
        args: CreateArgs,
        /// Return after start instead of waiting.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List containers.
    List {
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show processes of a container.
    Ps {
        id: String,
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Arguments for ps(1) in table mode.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resource limits.
    Update(UpdateArgs),
    /// Print container events and resource statistics.
    Events {
        id: String,
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats events (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Print the runtime's features (runtime-spec features.md).
    Features,
    /// Serve the CRI v1 API (RuntimeService, ImageService) on a unix socket.
    Serve(ServeArgs),
    /// pid 1 of a pod's shared PID namespace (internal).
    #[command(name = "pod-pause", hide = true)]
    PodPause,
    /// The per-container monitor the CRI server starts (internal).
    #[command(hide = true)]
    Shim {
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        /// The CRI log file; none: output is not logged (attach still sees it).
        #[arg(long = "log-path")]
        log_path: Option<PathBuf>,
        #[arg(long = "exit-file")]
        exit_file: PathBuf,
        #[arg(long)]
        stdin: bool,
        #[arg(long)]
        tty: bool,
    },
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    pub id: String,
    /// Command and arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// A process.json (OCI process object) describing what to run.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Extra environment (KEY=VALUE), repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// uid[:gid]
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Extra capability, repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Allow exec in a paused container (the process starts frozen, until resume).
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// AppArmor profile (refused: AppArmor is not supported).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label (refused: SELinux is not supported).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub id: String,
    /// A LinuxResources JSON file ("-" for stdin).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/skiff/cri.sock")]
    pub listen: PathBuf,
    /// Image store directory.
    #[arg(long = "image-dir", default_value = "/var/lib/skiff/images")]
    pub image_dir: PathBuf,
    /// CNI network configuration directory.
    #[arg(long = "cni-conf-dir", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories (repeatable).
    #[arg(long = "cni-bin-dir", default_values = ["/opt/cni/bin", "/usr/lib/cni"])]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Registries (host:port) to pull from over plain HTTP; loopback ones always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// A mirror of a registry, `REGISTRY=URL` (e.g. `docker.io=http://10.0.0.1:5000`),
    /// tried before it; several allowed, tried in order. Images keep their names.
    #[arg(long = "registry-mirror", value_parser = parse_mirror)]
    pub registry_mirror: Vec<(String, String)>,
    /// Address of the streaming server for exec, attach and port-forward (port 0: any).
    #[arg(long = "streaming-address", default_value = "127.0.0.1:0")]
    pub streaming_address: std::net::SocketAddr,
}

impl Command {
    /// Whether this command must run from a copy of the binary that a container cannot
    /// write (see `skiff_runtime::exeseal`). Container processes start through the sealed
    /// exec stub where there is one, so create, run and exec need no copy, unless the
    /// spec has startContainer hooks (the init starts those itself, inside the
    /// container). The daemons re-execute once: what they start runs from their copy.
    pub fn needs_protected_binary(&self) -> bool {
        let stub = skiff_runtime::exeseal::HAS_EXEC_STUB;
        match self {
            Command::Serve(_) | Command::Shim { .. } | Command::PodPause => true,
            Command::Create { args, .. } | Command::Run { args, .. } => {
                !stub || has_start_container_hooks(&args.bundle)
            }
            Command::Exec(_) => !stub,
            _ => false,
        }
    }
}

/// A quick look at the bundle's config (a broken one is refused later, with its error).
fn has_start_container_hooks(bundle: &std::path::Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| v.pointer("/hooks/startContainer").cloned())
        .is_some_and(|h| h.as_array().is_some_and(|a| !a.is_empty()))
}

/// `REGISTRY=URL`, the URL http:// or https://.
fn parse_mirror(s: &str) -> Result<(String, String), String> {
    let (reg, url) = s.split_once('=').ok_or_else(|| {
        format!("{s:?}: expected REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000")
    })?;
    if reg.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{s:?}: expected REGISTRY=URL with an http:// or https:// URL"
        ));
    }
    Ok((reg.to_string(), url.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod mirror_tests {
    #[test]
    fn mirrors_are_registry_equals_url() {
        assert_eq!(
            super::parse_mirror("docker.io=http://10.0.0.1:5000/").unwrap(),
            ("docker.io".into(), "http://10.0.0.1:5000".into())
        );
        assert!(super::parse_mirror("docker.io").is_err());
        assert!(super::parse_mirror("docker.io=10.0.0.1:5000").is_err());
        assert!(super::parse_mirror("=http://x").is_err());
    }
}
