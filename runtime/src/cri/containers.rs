//! Container RPCs: create (rootfs overlay, config.json, monitor), start, stop, remove,
//! list, status, update, exec, stats, log reopen.

use super::events::Kind;
use super::records::{labels_match, new_id, ContainerRecord};
use super::shim::{now_ns, Exit, Ready};
use super::{oci_config, status, v1, Inner};
use crate::cgroups::Stats;
use crate::error::Error;
use crate::state::Status as RtStatus;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Status;

type R<T> = Result<T, Status>;

pub fn cpu_usage(st: &Stats, now: i64) -> v1::CpuUsage {
    v1::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: Some(v1::UInt64Value {
            value: st.cpu.usage.total,
        }),
        usage_nano_cores: None,
    }
}

pub fn memory_usage(st: &Stats, now: i64) -> v1::MemoryUsage {
    let raw = |k: &str| st.memory.raw.get(k).copied();
    let inactive = raw("inactive_file")
        .or(raw("total_inactive_file"))
        .unwrap_or(0);
    let usage = st.memory.usage.usage;
    let val = |v: u64| Some(v1::UInt64Value { value: v });
    v1::MemoryUsage {
        timestamp: now,
        working_set_bytes: val(usage.saturating_sub(inactive)),
        available_bytes: match st.memory.usage.limit {
            0 | u64::MAX => None,
            l if l >= 1 << 62 => None,
            l => val(l.saturating_sub(usage)),
        },
        usage_bytes: val(usage),
        rss_bytes: raw("anon")
            .or(raw("total_rss"))
            .or(raw("rss"))
            .and_then(val),
        page_faults: raw("pgfault").or(raw("total_pgfault")).and_then(val),
        major_page_faults: raw("pgmajfault").or(raw("total_pgmajfault")).and_then(val),
    }
}

/// Bytes and inodes under `p` (not following symlinks).
pub(super) fn dir_usage(p: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            inodes += 1;
            if let Ok(md) = e.path().symlink_metadata() {
                if md.is_dir() {
                    stack.push(e.path());
                } else {
                    bytes += md.len();
                }
            }
        }
    }
    (bytes, inodes)
}

fn mount_overlay(lowers: &[PathBuf], dir: &Path) -> crate::Result<PathBuf> {
    use crate::error::Context;
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).step(|| format!("create {}", d.display()))?;
    }
    // overlayfs wants the top layer first.
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .step(|| format!("mount overlay rootfs at {}", rootfs.display()))?;
    Ok(rootfs)
}

/// Unmount the rootfs (if mounted) and remove the container's directory.
fn remove_dir(dir: &Path) {
    let _ = nix::mount::umount2(&dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(dir);
}

impl Inner {
    fn find_container(&self, q: &str) -> R<ContainerRecord> {
        let recs = self.records();
        recs.container_id(q)
            .and_then(|id| recs.containers.get(&id).cloned())
            .ok_or_else(|| Status::not_found(format!("container {q:?} not found")))
    }

    /// The container's CRI state, and its exit once it has one.
    pub fn container_state(&self, c: &ContainerRecord) -> (v1::ContainerState, Option<Exit>) {
        if let Some(e) = Exit::load(&c.exit_file()) {
            return (v1::ContainerState::ContainerExited, Some(e));
        }
        match self.rt.state(&c.id) {
            Ok((_, RtStatus::Created | RtStatus::Creating)) => {
                (v1::ContainerState::ContainerCreated, None)
            }
            Ok((_, RtStatus::Running | RtStatus::Paused)) => {
                (v1::ContainerState::ContainerRunning, None)
            }
            _ => {
                // The monitor writes the exit file right after the init is reaped: give a
                // live monitor a moment; a gone one has written all it ever will.
                let end = Instant::now() + Duration::from_millis(300);
                loop {
                    if let Some(e) = Exit::load(&c.exit_file()) {
                        return (v1::ContainerState::ContainerExited, Some(e));
                    }
                    if Instant::now() >= end || !monitor_alive(c) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Some(e) = Exit::load(&c.exit_file()) {
                    return (v1::ContainerState::ContainerExited, Some(e));
                }
                let e = Exit {
                    exit_code: 255,
                    finished_at: 0,
                    reason: "Unknown".into(),
                };
                (v1::ContainerState::ContainerExited, Some(e))
            }
        }
    }

    /// The image a container's status names, as containerd's: a name of the image it
    /// runs (the one it was asked for, normalized, if the image still has it, else its
    /// first), so `nginx` shows as `docker.io/library/nginx:latest` and an image asked for
    /// by ID shows by name. Without any name left: what it was asked for.
    fn status_image(&self, c: &ContainerRecord) -> String {
        let names = self.images.names_of(&c.image_ref);
        let asked = super::images::normalize(&c.image);
        names
            .iter()
            .find(|n| **n == asked)
            .or(names.first())
            .cloned()
            .unwrap_or_else(|| c.image.clone())
    }

    pub fn create_container(&self, req: v1::CreateContainerRequest) -> R<String> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| (m.name.clone(), m.attempt))
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| Status::invalid_argument("config.metadata.name is required"))?;
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Status::invalid_argument("config.image.image is required"))?;
        let pod = self.find_pod_record(&req.pod_sandbox_id)?;
        if !pod.ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        {
            let recs = self.records();
            if let Some(o) = recs.containers.values().find(|c| {
                c.pod_id == pod.id
                    && c.config
                        .metadata
                        .as_ref()
                        .map(|m| (m.name.clone(), m.attempt))
                        == Some(name.clone())
            }) {
                return Err(Status::already_exists(format!(
                    "container name {:?} (attempt {}) is reserved for {}",
                    name.0, name.1, o.id
                )));
            }
        }
        let (store_name, manifest) = self.resolve_image(&image)?;
        let img_cfg = self.images.config(&store_name).map_err(status)?;
        let image_id = self.image_id(&manifest);
        let layers = self.images.layers(&store_name).map_err(status)?;
        let sb = crate::sandbox::load(&self.cfg.root, &pod.id).map_err(status)?;

        let id = new_id();
        let dir = self.containers_dir().join(&id);
        let res = (|| -> R<ContainerRecord> {
            let rootfs = mount_overlay(&layers, &dir).map_err(status)?;
            let oci = oci_config::build(&oci_config::Input {
                id: &id,
                pod: &pod,
                sandbox: &sb,
                config: &config,
                image: &img_cfg,
                rootfs: &rootfs,
            })
            .map_err(status)?;
            let bundle = dir.join("bundle");
            std::fs::create_dir_all(&bundle)
                .and_then(|()| {
                    std::fs::write(
                        bundle.join("config.json"),
                        serde_json::to_vec_pretty(&oci).expect("serializes"),
                    )
                })
                .map_err(|e| Status::internal(format!("write bundle: {e}")))?;
            let log_path = if config.log_path.is_empty() {
                PathBuf::new()
            } else {
                Path::new(&pod.config.log_directory).join(&config.log_path)
            };
            let rec = ContainerRecord {
                id: id.clone(),
                pod_id: pod.id.clone(),
                config: config.clone(),
                image: image.clone(),
                image_ref: manifest.clone(),
                image_id: image_id.clone(),
                created_at: now_ns(),
                started_at: 0,
                log_path,
                dir: dir.clone(),
            };
            self.spawn_monitor(&rec)?;
            Ok(rec)
        })();
        let rec = match res {
            Ok(r) => r,
            Err(e) => {
                let _ = self.rt.delete(&id, true);
                remove_dir(&dir);
                return Err(e);
            }
        };
        let pod_id = rec.pod_id.clone();
        if let Err(e) = self.records().save_container(rec) {
            let _ = self.rt.delete(&id, true);
            remove_dir(&dir);
            return Err(status(e));
        }
        self.emit(&id, &pod_id, Kind::ContainerCreatedEvent);
        Ok(id)
    }

    /// Start the container's monitor and wait until it created the container.
    fn spawn_monitor(&self, c: &ContainerRecord) -> R<()> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let shim_log = std::fs::File::create(c.dir.join("shim.log"))
            .map_err(|e| Status::internal(format!("create shim log: {e}")))?;
        let mut cmd = Command::new(&self.cfg.shim_binary);
        // The binary is /proc/self/exe: ps and pgrep should still see skiff-runtime.
        std::os::unix::process::CommandExt::arg0(&mut cmd, "skiff-runtime");
        cmd.arg("--root")
            .arg(&self.cfg.root)
            .arg("shim")
            .arg(&c.id)
            .arg("--bundle")
            .arg(c.bundle())
            .arg("--exit-file")
            .arg(c.exit_file());
        // No log_path: the container runs with no log file (output still reaches attach).
        if !c.log_path.as_os_str().is_empty() {
            cmd.arg("--log-path").arg(&c.log_path);
        }
        if c.config.stdin {
            cmd.arg("--stdin");
        }
        if c.config.tty {
            cmd.arg("--tty");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|e| {
                Status::internal(format!(
                    "start monitor {}: {e}",
                    self.cfg.shim_binary.display()
                ))
            })?;
        let mut line = String::new();
        let out = child.stdout.take().expect("piped");
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        // The monitor forks and its first process exits at once; the second lives on.
        let _ = child.wait();
        let ready: Ready = serde_json::from_str(line.trim()).map_err(|_| {
            let log = std::fs::read_to_string(c.dir.join("shim.log")).unwrap_or_default();
            Status::internal(format!("container monitor failed: {}", log.trim()))
        })?;
        match ready.error {
            Some(e) => Err(Status::unknown(format!("create container: {e}"))),
            None => Ok(()),
        }
    }

    pub fn start_container(&self, q: &str) -> R<()> {
        let mut c = self.find_container(q)?;
        match self.container_state(&c).0 {
            v1::ContainerState::ContainerCreated => {}
            s => {
                return Err(Status::failed_precondition(format!(
                    "container {} is in state {}, not CONTAINER_CREATED",
                    c.id,
                    s.as_str_name()
                )))
            }
        }
        // Taken before the start: a quick process may have finished (and its monitor
        // stamped finished_at) by the time start returns.
        let started = now_ns();
        self.rt.start(&c.id).map_err(status)?;
        c.started_at = started;
        let (id, pod_id) = (c.id.clone(), c.pod_id.clone());
        self.records().save_container(c).map_err(status)?;
        self.emit(&id, &pod_id, Kind::ContainerStartedEvent);
        Ok(())
    }

    fn wait_exited(&self, c: &ContainerRecord, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if c.exit_file().exists() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            if let Ok((st, _)) = self.rt.state(&c.id) {
                let left = end.saturating_duration_since(Instant::now());
                crate::container::wait_exit(
                    st.pid,
                    st.pid_start,
                    left.min(Duration::from_millis(200)),
                );
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Stop: SIGTERM, then SIGKILL to every process after `timeout` seconds.
    pub fn stop_container(&self, q: &str, timeout: i64) -> R<()> {
        let c = self.find_container(q)?;
        if self.container_state(&c).0 == v1::ContainerState::ContainerExited {
            return Ok(());
        }
        if timeout > 0 {
            let _ = self.rt.kill(&c.id, Signal::SIGTERM, false);
            if self.wait_exited(&c, Duration::from_secs(timeout as u64)) {
                self.emit(&c.id, &c.pod_id, Kind::ContainerStoppedEvent);
                return Ok(());
            }
        }
        let _ = self.rt.kill(&c.id, Signal::SIGKILL, true);
        if self.wait_exited(&c, Duration::from_secs(10)) {
            self.emit(&c.id, &c.pod_id, Kind::ContainerStoppedEvent);
            Ok(())
        } else {
            Err(Status::deadline_exceeded(format!(
                "container {} did not exit after SIGKILL",
                c.id
            )))
        }
    }

    pub fn remove_container(&self, q: &str) -> R<()> {
        // Removing what is already gone succeeds, as the CRI asks.
        let Ok(c) = self.find_container(q) else {
            return Ok(());
        };
        if self.container_state(&c).0 != v1::ContainerState::ContainerExited {
            self.stop_container(&c.id, 0)?;
        }
        match self.rt.delete(&c.id, true) {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(status(e)),
        }
        remove_dir(&c.dir);
        self.records().remove_container(&c.id).map_err(status)?;
        // Its image may have been removed while it was exited: collect what it held.
        let image_kept = self
            .images
            .list()
            .map_err(status)?
            .iter()
            .any(|i| i.id == c.image_id);
        if !image_kept {
            self.images.gc().map_err(status)?;
        }
        self.emit(&c.id, &c.pod_id, Kind::ContainerDeletedEvent);
        Ok(())
    }

    fn to_container(&self, c: &ContainerRecord, state: v1::ContainerState) -> v1::Container {
        v1::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            state: state as i32,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_id.clone(),
        }
    }

    pub fn list_containers(&self, f: Option<v1::ContainerFilter>) -> Vec<v1::Container> {
        let f = f.unwrap_or_default();
        let all: Vec<ContainerRecord> = self.records().containers.values().cloned().collect();
        let mut out: Vec<v1::Container> = all
            .iter()
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| labels_match(&c.config.labels, &f.label_selector))
            .filter_map(|c| {
                let s = self.container_state(c).0;
                f.state
                    .as_ref()
                    .is_none_or(|w| w.state == s as i32)
                    .then(|| self.to_container(c, s))
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        out
    }

    pub fn container_status(&self, q: &str, verbose: bool) -> R<v1::ContainerStatusResponse> {
        let c = self.find_container(q)?;
        let (state, exit) = self.container_state(&c);
        let mut info = std::collections::HashMap::new();
        if verbose {
            let spec: serde_json::Value = std::fs::read(c.bundle().join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let pid = self.rt.state(&c.id).map(|(s, _)| s.pid).unwrap_or(0);
            info.insert(
                "info".to_string(),
                serde_json::json!({"sandboxID": c.pod_id, "pid": pid, "runtimeSpec": spec, "bundle": c.bundle()})
                    .to_string(),
            );
        }
        let (reason, code, finished) = match &exit {
            Some(e) => (e.reason.clone(), e.exit_code, e.finished_at),
            None => (String::new(), 0, 0),
        };
        Ok(v1::ContainerStatusResponse {
            status: Some(v1::ContainerStatus {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                state: state as i32,
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: finished,
                exit_code: code,
                image: Some(v1::ImageSpec {
                    image: self.status_image(&c),
                    ..c.config.image.clone().unwrap_or_default()
                }),
                image_ref: c.image_ref.clone(),
                reason,
                message: String::new(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                mounts: c.config.mounts.clone(),
                log_path: c.log_path.display().to_string(),
                resources: c
                    .config
                    .linux
                    .as_ref()
                    .and_then(|l| l.resources.clone())
                    .map(|r| v1::ContainerResources {
                        linux: Some(r),
                        windows: None,
                    }),
                image_id: c.image_id.clone(),
                user: None,
            }),
            info,
        })
    }

    pub fn update_resources(&self, req: v1::UpdateContainerResourcesRequest) -> R<()> {
        let mut c = self.find_container(&req.container_id)?;
        let Some(r) = req.linux else {
            return Ok(());
        };
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_value(oci_config::resources(&r))
                .map_err(|e| Status::invalid_argument(format!("resources: {e}")))?;
        self.rt.update(&c.id, &res).map_err(status)?;
        c.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(r);
        self.records().save_container(c).map_err(status)
    }

    pub fn container_stats(&self, q: &str) -> R<v1::ContainerStats> {
        let c = self.find_container(q)?;
        let st = self.rt.stats(&c.id).map_err(status)?;
        let now = now_ns();
        let (bytes, inodes) = dir_usage(&c.dir.join("upper"));
        Ok(v1::ContainerStats {
            attributes: Some(v1::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: Some(cpu_usage(&st, now)),
            memory: Some(memory_usage(&st, now)),
            writable_layer: Some(v1::FilesystemUsage {
                timestamp: now,
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: c.dir.join("upper").display().to_string(),
                }),
                used_bytes: Some(v1::UInt64Value { value: bytes }),
                inodes_used: Some(v1::UInt64Value { value: inodes }),
            }),
            swap: None,
        })
    }

    pub fn list_container_stats(
        &self,
        f: Option<v1::ContainerStatsFilter>,
    ) -> Vec<v1::ContainerStats> {
        let f = f.unwrap_or_default();
        let ids: Vec<String> = self
            .records()
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| labels_match(&c.config.labels, &f.label_selector))
            .map(|c| c.id.clone())
            .collect();
        // Containers that are not running have no stats and are left out.
        ids.iter()
            .filter_map(|id| self.container_stats(id).ok())
            .collect()
    }

    pub fn reopen_log(&self, q: &str) -> R<()> {
        let c = self.find_container(q)?;
        if self.container_state(&c).0 != v1::ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let pid = monitor_pid(&c)
            .ok_or_else(|| Status::failed_precondition("the container's monitor is gone"))?;
        // Synchronous, as containerd's: when this returns the new file exists.
        let count = c.dir.join(super::shim::REOPENED_FILE);
        let before = std::fs::read_to_string(&count).unwrap_or_default();
        nix::sys::signal::kill(pid, Signal::SIGUSR1)
            .map_err(|e| Status::failed_precondition(format!("signal the monitor: {e}")))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&count).unwrap_or_default() == before {
            if std::time::Instant::now() > deadline || !monitor_alive(&c) {
                return Err(Status::internal(format!(
                    "container {}: the monitor did not reopen {}",
                    c.id,
                    c.log_path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    /// A running container's full id and directory (for exec and attach sessions).
    pub fn running_container(&self, q: &str) -> R<(String, PathBuf)> {
        let c = self.find_container(q)?;
        if self.container_state(&c).0 != v1::ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        Ok((c.id, c.dir))
    }

    /// The id and command line to run `cmd` in a running container through the CLI
    /// (a separate process: forking this multi-threaded server is avoided).
    pub fn exec_command(
        &self,
        q: &str,
        cmd: &[String],
        pid_file: Option<&Path>,
        extra: &[String],
    ) -> R<(String, std::process::Command)> {
        let c = self.find_container(q)?;
        if cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is required"));
        }
        if self.container_state(&c).0 != v1::ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let mut command = std::process::Command::new(&self.cfg.shim_binary);
        std::os::unix::process::CommandExt::arg0(&mut command, "skiff-runtime");
        command
            .arg("--root")
            .arg(&self.cfg.root)
            .arg("exec")
            .args(extra);
        if let Some(p) = pid_file {
            command.arg("--pid-file").arg(p);
        }
        command.arg(&c.id).arg("--").args(cmd);
        Ok((c.id, command))
    }
}

/// The container's monitor process, from the pid it wrote.
fn monitor_pid(c: &ContainerRecord) -> Option<nix::unistd::Pid> {
    std::fs::read_to_string(c.dir.join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(nix::unistd::Pid::from_raw)
}

fn monitor_alive(c: &ContainerRecord) -> bool {
    monitor_pid(c).is_some_and(|p| nix::sys::signal::kill(p, None).is_ok())
}
