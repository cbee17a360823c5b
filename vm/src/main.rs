//! `skiff-vm`: bring test clusters up and down, run commands in their VMs.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skiff_vm::{Cluster, UpOptions};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "skiff-vm", version, about = "QEMU test clusters for Skiff")]
struct Cli {
    /// Cluster name (several can run side by side).
    #[arg(long, global = true, default_value = "default")]
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot N VMs named node-1..node-N.
    Up {
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        #[arg(long, default_value_t = 512)]
        memory: u32,
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// auto (probe KVM, fall back to TCG), kvm or tcg.
        #[arg(long, default_value = "auto")]
        accel: String,
        /// Directory shared read-only at /skiff (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Form a Kubernetes cluster: the control plane on node-1, every other node
        /// joined with a bootstrap token; `skiff-vm kubeconfig` prints the admin's.
        #[arg(long)]
        kubernetes: bool,
        /// Control planes (node-1..node-N; with 3: a 3-member etcd over TLS and three API
        /// servers, every worker failing over between them); the other nodes are workers.
        #[arg(long, default_value_t = 1, requires = "kubernetes")]
        control_planes: usize,
        /// The skiff binaries, relative to the workspace (built there: cargo build).
        #[arg(long, default_value = "target/debug")]
        bin_dir: String,
        /// Image archives (relative to the workspace) every node imports (repeatable).
        #[arg(long = "image")]
        images: Vec<String>,
        /// ARCHIVE=REPOSITORY:TAG: push an OCI archive (a host path) to node-1's registry,
        /// which every node uses as docker.io's mirror (repeatable; needs --kubernetes).
        /// scripts/images/cluster-images.sh builds busybox and nginx and prints these.
        #[arg(long = "mirror-image", requires = "kubernetes")]
        mirror_images: Vec<String>,
    },
    /// Print the admin kubeconfig of a Kubernetes cluster (its server a loopback port).
    Kubeconfig {
        /// With several control planes: the one whose API server it names (1, 2, 3).
        #[arg(long)]
        control_plane: Option<usize>,
    },
    /// List the nodes of a cluster.
    Status,
    /// Run a command in a VM; prints its output and exits with its status.
    Exec {
        node: String,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
    /// Pull the plug on a VM (SIGKILL to its QEMU): a node failure.
    Kill { node: String },
    /// Boot a killed VM again, from the image (a fresh machine under the same name).
    Start { node: String },
    /// Stop a cluster (or all with --all) and remove everything it left.
    Down {
        #[arg(long)]
        all: bool,
    },
    /// Build the VM image and print its paths.
    Image,
    /// (inside VMs) serve agent requests on the virtio-serial port.
    #[command(hide = true)]
    Agent,
    /// (internal) the loopback L2 hub: HUBPORT:VMPORT,...
    #[command(hide = true)]
    Hub {
        #[arg(long)]
        ports: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            nodes,
            memory,
            cpus,
            accel,
            workspace,
            kubernetes,
            control_planes,
            bin_dir,
            images,
            mirror_images,
        } => {
            let mirror_images = mirror_images
                .iter()
                .map(|m| {
                    let (a, r) = m.split_once('=').with_context(|| {
                        format!("--mirror-image {m}: expected ARCHIVE=REPOSITORY:TAG")
                    })?;
                    let a =
                        std::fs::canonicalize(a).with_context(|| format!("--mirror-image: {a}"))?;
                    Ok((a, r.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let free_port = || -> Result<u16> {
                Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port())
            };
            let workspace = std::fs::canonicalize(workspace.unwrap_or(std::env::current_dir()?))?;
            let me = std::env::current_exe()?;
            let runtime = workspace.join("target/release/skiff-runtime");
            let opts = UpOptions {
                name: cli.name.clone(),
                nodes,
                memory_mb: memory,
                cpus,
                workspace,
                agent_bin: me,
                link_against: vec![runtime],
                accel,
                api_forwards: if kubernetes {
                    (0..control_planes)
                        .map(|_| free_port())
                        .collect::<Result<_>>()?
                } else {
                    Vec::new()
                },
                registry_forward: if mirror_images.is_empty() {
                    None
                } else {
                    Some(free_port()?)
                },
            };
            let c = Cluster::up(&opts)?;
            if kubernetes {
                let t = std::time::Instant::now();
                let form = skiff_vm::kubernetes::FormOptions {
                    bin_dir: format!("/skiff/{bin_dir}"),
                    images: images.iter().map(|i| format!("/skiff/{i}")).collect(),
                    api_ports: opts.api_forwards.clone(),
                    control_args: String::new(),
                    kubelet_args: String::new(),
                    mirror: opts
                        .registry_forward
                        .map(|host_port| skiff_vm::kubernetes::Mirror {
                            host_port,
                            images: mirror_images.clone(),
                        }),
                };
                skiff_vm::kubernetes::form(&c, &form)?;
                println!(
                    "kubernetes formed in {} ms: skiff-vm --name {} kubeconfig > kubeconfig",
                    t.elapsed().as_millis(),
                    c.state.name
                );
            }
            println!(
                "cluster {} up: {} node(s), accel {}, {} ms to every agent answering",
                c.state.name,
                c.state.nodes.len(),
                c.state.accel,
                c.state.boot_ms
            );
        }
        Cmd::Kubeconfig { control_plane } => {
            let c = Cluster::open(&cli.name)?;
            let file =
                control_plane.map_or("kubeconfig".to_string(), |n| format!("kubeconfig-{n}"));
            let kc = std::fs::read_to_string(c.dir.join(&file)).with_context(|| {
                format!(
                    "cluster {}: no {file} (formed with --kubernetes, that many control planes?)",
                    cli.name
                )
            })?;
            print!("{kc}");
        }
        Cmd::Status => {
            let c = Cluster::open(&cli.name)?;
            println!("{:<10} {:<12} {:<18}", "NODE", "IP", "MAC");
            for n in &c.state.nodes {
                println!("{:<10} {:<12} {:<18}", n.name, n.ip, n.mac);
            }
        }
        Cmd::Exec { node, timeout, cmd } => {
            let c = Cluster::open(&cli.name)?;
            let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let r = c.exec(&node, &argv, Duration::from_secs(timeout))?;
            print!("{}", r.stdout);
            eprint!("{}", r.stderr);
            std::process::exit(r.code);
        }
        Cmd::Kill { node } => Cluster::open(&cli.name)?.kill(&node)?,
        Cmd::Start { node } => {
            let c = Cluster::open(&cli.name)?;
            c.start(&node)?;
            // A formed cluster: the fresh machine joins again with the cluster's token.
            if c.dir.join("join.json").exists() {
                skiff_vm::kubernetes::rejoin(&c, &node)?;
                println!("{node} booted and joined again");
            }
        }
        Cmd::Down { all } => {
            let names = if all {
                Cluster::names()
            } else {
                vec![cli.name.clone()]
            };
            for n in names {
                Cluster::down(&n).with_context(|| format!("down {n}"))?;
            }
        }
        Cmd::Image => {
            let me = std::env::current_exe()?;
            let img = skiff_vm::image::build(
                std::path::Path::new(skiff_vm::cluster::IMAGE_CACHE),
                &me,
                &[],
            )?;
            println!(
                "kernel {}\ninitramfs {}",
                img.kernel.display(),
                img.initramfs.display()
            );
        }
        Cmd::Agent => skiff_vm::agent::serve()?,
        Cmd::Hub { ports } => {
            let ports = ports
                .split(',')
                .map(|p| {
                    let (h, v) = p.split_once(':').context("HUB:VM")?;
                    Ok(skiff_vm::hub::Port {
                        hub: h.parse()?,
                        vm: v.parse()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            skiff_vm::hub::run(&ports)?;
        }
    }
    Ok(())
}
