//! A cluster of test VMs: boot, address, run commands, tear down. State lives in
//! /run/skiff-vm/<name> (pid files, sockets, console logs) so `down` cleans up even after
//! the tool itself crashed.

use crate::agent::{self, Response};
use crate::hub::{self, Port};
use crate::image::{self, Image};
use crate::qemu::{self, VmSpec};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const STATE_ROOT: &str = "/run/skiff-vm";
pub const IMAGE_CACHE: &str = "/var/tmp/skiff-vm";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    /// Address on the private network (inside the VM).
    pub ip: String,
    pub mac: String,
    /// Its attachment to the hub (None for a single VM).
    #[serde(default)]
    pub port: Option<Port>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub nodes: Vec<NodeState>,
    pub hub_pid: Option<i32>,
    pub accel: String,
    pub workspace: PathBuf,
    /// Wall time from `up` to every agent answering.
    pub boot_ms: u128,
    /// What a node needs to boot again after `kill` (`start`).
    #[serde(default)]
    pub boot: Option<BootSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    #[serde(default)]
    pub api_forwards: Vec<u16>,
    #[serde(default)]
    pub registry_forward: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Shared read-only at /skiff in every VM.
    pub workspace: PathBuf,
    /// The skiff-vm binary: the in-VM agent and the hub.
    pub agent_bin: PathBuf,
    /// Binaries whose libraries the image must carry.
    pub link_against: Vec<PathBuf>,
    /// "kvm", "tcg" or "auto" (probe).
    pub accel: String,
    /// Node i's API server reachable at host loopback port `api_forwards[i]` (the
    /// control planes of a Kubernetes cluster; empty for none).
    pub api_forwards: Vec<u16>,
    /// node-1's registry (port 5000) reachable at this host loopback port, to fill it.
    pub registry_forward: Option<u16>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub state: ClusterState,
}

pub fn node_ip(i: usize) -> String {
    format!("10.99.0.{}", 11 + i)
}

/// SIGKILL and wait (bounded) until the process is gone, so `down` leaves nothing running.
fn kill_pid(pid: i32) {
    if pid <= 0 {
        return;
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    };
    for _ in 0..500 {
        if gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Wait for the guest's boot marker, then for the agent to answer.
fn wait_agent(dir: &Path, name: &str, deadline: Instant) -> Result<()> {
    let console = qemu::console_log(dir, name);
    while Instant::now() < deadline {
        if std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains("SKIFF-VM-READY")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock = qemu::agent_socket(dir, name);
    while Instant::now() < deadline {
        if let Ok(r) = agent::call_timeout(&sock, &["true".to_string()], Duration::from_secs(2)) {
            if r.ok() {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{name}: agent did not answer; console tail:\n{}",
        tail(&console, 20)
    )
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Decide the accelerator: KVM only if a probe VM boots under it in a few seconds.
fn choose_accel(opts: &UpOptions, img: &Image, dir: &Path) -> String {
    match opts.accel.as_str() {
        "kvm" | "tcg" => return opts.accel.clone(),
        _ => {}
    }
    let cache = Path::new(IMAGE_CACHE).join("accel");
    let key = format!("{}", img.kernel.display());
    if let Ok(s) = std::fs::read_to_string(&cache) {
        if let Some((k, v)) = s.split_once('\n') {
            if k == key {
                return v.trim().to_string();
            }
        }
    }
    let mut result = "tcg".to_string();
    if qemu::kvm_device_usable() {
        let probe = VmSpec {
            name: "probe",
            index: 0,
            ip: "10.99.0.250/24",
            memory_mb: 256,
            cpus: 1,
            accel: "kvm",
            dir,
            workspace: &opts.workspace,
            port: None,
            api_forward: None,
            registry_forward: None,
        };
        if qemu::command(img, &probe)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            let deadline = Instant::now() + Duration::from_secs(6);
            if wait_agent(dir, "probe", deadline).is_ok() {
                result = "kvm".into();
            }
        }
        if let Some(pid) = read_pid(&qemu::pid_file(dir, "probe")) {
            kill_pid(pid);
        }
        for f in [
            qemu::pid_file(dir, "probe"),
            qemu::console_log(dir, "probe"),
            qemu::agent_socket(dir, "probe"),
        ] {
            let _ = std::fs::remove_file(f);
        }
    }
    let _ = std::fs::write(&cache, format!("{key}\n{result}\n"));
    result
}

impl Cluster {
    pub fn up(opts: &UpOptions) -> Result<Cluster> {
        let start = Instant::now();
        let dir = Path::new(STATE_ROOT).join(&opts.name);
        if dir.join("state.json").exists() {
            bail!(
                "cluster {} is already up (skiff-vm down --name {})",
                opts.name,
                opts.name
            );
        }
        std::fs::create_dir_all(&dir)?;
        let img = image::build(Path::new(IMAGE_CACHE), &opts.agent_bin, &opts.link_against)?;
        let accel = choose_accel(opts, &img, &dir);

        let ports: Vec<Port> = (0..opts.nodes)
            .map(|_| {
                Ok(Port {
                    hub: hub::free_udp_port()?,
                    vm: hub::free_udp_port()?,
                })
            })
            .collect::<Result<_>>()?;
        let mut hub_pid = None;
        if opts.nodes > 1 {
            use std::os::unix::process::CommandExt;
            let spec = ports
                .iter()
                .map(|p| format!("{}:{}", p.hub, p.vm))
                .collect::<Vec<_>>()
                .join(",");
            let mut c = std::process::Command::new(&opts.agent_bin);
            c.args(["hub", "--ports", &spec])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join("hub.log"))?);
            unsafe {
                c.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            hub_pid = Some(c.spawn().context("start hub")?.id() as i32);
        }
        let state = ClusterState {
            name: opts.name.clone(),
            nodes: ports
                .iter()
                .enumerate()
                .map(|(i, port)| NodeState {
                    name: format!("node-{}", i + 1),
                    ip: node_ip(i),
                    mac: qemu::mac(i),
                    port: Some(*port),
                })
                .collect(),
            hub_pid,
            accel: accel.clone(),
            workspace: opts.workspace.clone(),
            boot_ms: 0,
            boot: Some(BootSpec {
                kernel: img.kernel.clone(),
                initramfs: img.initramfs.clone(),
                memory_mb: opts.memory_mb,
                cpus: opts.cpus,
                api_forwards: opts.api_forwards.clone(),
                registry_forward: opts.registry_forward,
            }),
        };
        let c = Cluster {
            dir: dir.clone(),
            state,
        };
        c.save()?;
        for n in &c.state.nodes {
            if let Err(e) = c.launch(&n.name) {
                let _ = Cluster::down(&opts.name);
                return Err(e);
            }
        }
        let cluster = c;
        let deadline = Instant::now() + Duration::from_secs(if accel == "kvm" { 60 } else { 180 });
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let hs: Vec<_> = cluster
                .state
                .nodes
                .iter()
                .map(|n| s.spawn(|| wait_agent(&dir, &n.name, deadline)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            if let Err(e) = r {
                let _ = Cluster::down(&opts.name);
                return Err(e);
            }
        }
        let mut cluster = cluster;
        cluster.state.boot_ms = start.elapsed().as_millis();
        cluster.save()?;
        Ok(cluster)
    }

    /// Start the QEMU process of one node (its disk is the image: it boots fresh).
    fn launch(&self, name: &str) -> Result<()> {
        let i = self
            .state
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name} in cluster {}", self.state.name))?;
        let n = &self.state.nodes[i];
        let boot = self
            .state
            .boot
            .as_ref()
            .context("this cluster was started by an older skiff-vm: down and up again")?;
        let img = Image {
            kernel: boot.kernel.clone(),
            initramfs: boot.initramfs.clone(),
        };
        let vm = VmSpec {
            name: &n.name,
            index: i,
            ip: &format!("{}/24", n.ip),
            memory_mb: boot.memory_mb,
            cpus: boot.cpus,
            accel: &self.state.accel,
            dir: &self.dir,
            workspace: &self.state.workspace,
            port: n.port,
            api_forward: boot.api_forwards.get(i).copied(),
            registry_forward: boot.registry_forward.filter(|_| i == 0),
        };
        // A fresh console, so the boot marker found is this boot's.
        let _ = std::fs::remove_file(qemu::console_log(&self.dir, name));
        let out = qemu::command(&img, &vm)
            .output()
            .context("run qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        if !out.status.success() {
            bail!(
                "qemu for {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Pull the plug on a node: SIGKILL its QEMU (no shutdown, no goodbye to the
    /// cluster), as a machine that loses power.
    pub fn kill(&self, name: &str) -> Result<()> {
        self.node(name)?;
        let pid_file = qemu::pid_file(&self.dir, name);
        let pid = read_pid(&pid_file).with_context(|| format!("{name} is not running"))?;
        kill_pid(pid);
        let _ = std::fs::remove_file(pid_file);
        Ok(())
    }

    /// Boot a killed node again (from the image, so with empty disks: it must rejoin)
    /// and wait for its agent.
    pub fn start(&self, name: &str) -> Result<()> {
        self.node(name)?;
        if let Some(pid) = read_pid(&qemu::pid_file(&self.dir, name)) {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("{name} is running (skiff-vm kill {name} first)");
            }
        }
        self.launch(name)?;
        let timeout = if self.state.accel == "kvm" { 60 } else { 180 };
        wait_agent(
            &self.dir,
            name,
            Instant::now() + Duration::from_secs(timeout),
        )
    }

    fn save(&self) -> Result<()> {
        std::fs::write(
            self.dir.join("state.json"),
            serde_json::to_vec_pretty(&self.state)?,
        )?;
        Ok(())
    }

    pub fn open(name: &str) -> Result<Cluster> {
        let dir = Path::new(STATE_ROOT).join(name);
        let text = std::fs::read_to_string(dir.join("state.json"))
            .with_context(|| format!("cluster {name} is not up"))?;
        Ok(Cluster {
            state: serde_json::from_str(&text)?,
            dir,
        })
    }

    pub fn names() -> Vec<String> {
        std::fs::read_dir(STATE_ROOT)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stop every VM and the hub and remove the state directory. Works from pid files
    /// alone, so a crashed `up` can be cleaned up too.
    pub fn down(name: &str) -> Result<()> {
        let dir = Path::new(STATE_ROOT).join(name);
        if !dir.exists() {
            return Ok(());
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid") {
                    if let Some(pid) = read_pid(&e.path()) {
                        kill_pid(pid);
                    }
                }
            }
        }
        if let Ok(c) = Cluster::open(name) {
            if let Some(h) = c.state.hub_pid {
                kill_pid(h);
            }
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))
    }

    pub fn node(&self, name: &str) -> Result<&NodeState> {
        self.state
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name} in cluster {}", self.state.name))
    }

    pub fn exec(&self, node: &str, argv: &[&str], timeout: Duration) -> Result<Response> {
        self.exec_input(node, argv, "", timeout)
    }

    /// Run a command with `stdin` as its input.
    pub fn exec_input(
        &self,
        node: &str,
        argv: &[&str],
        stdin: &str,
        timeout: Duration,
    ) -> Result<Response> {
        self.node(node)?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        agent::call(&qemu::agent_socket(&self.dir, node), &argv, stdin, timeout)
    }

    /// Run a shell script in the VM.
    pub fn sh(&self, node: &str, script: &str) -> Result<Response> {
        self.exec(node, &["sh", "-c", script], Duration::from_secs(120))
    }

    pub fn console_tail(&self, node: &str, lines: usize) -> String {
        tail(&qemu::console_log(&self.dir, node), lines)
    }

    /// A cluster shared by tests: boot it once (under a lock) and reuse it while it answers.
    pub fn shared(opts: &UpOptions) -> Result<Cluster> {
        std::fs::create_dir_all(STATE_ROOT)?;
        let lock =
            std::fs::File::create(Path::new(STATE_ROOT).join(format!("{}.lock", opts.name)))?;
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        if let Ok(c) = Cluster::open(&opts.name) {
            // Same shape and the same workspace behind /skiff (another checkout's cluster
            // would run the wrong binaries).
            let healthy = c.state.nodes.len() == opts.nodes
                && c.state.workspace == opts.workspace
                && c.state.nodes.iter().all(|n| {
                    agent::call_timeout(
                        &qemu::agent_socket(&c.dir, &n.name),
                        &["true".to_string()],
                        Duration::from_secs(5),
                    )
                    .is_ok_and(|r| r.ok())
                });
            if healthy {
                return Ok(c);
            }
            Cluster::down(&opts.name)?;
        }
        Cluster::up(opts)
    }
}
