//! The container lifecycle as a library: create, start, state, kill, delete, exec,
//! pause/resume, update, stats. The CLI and the CRI server both call this in process.

use crate::cgroups::{self, Manager};
use crate::channel::{Channel, Msg};
use crate::error::{Context, Error, Result};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, Plan};
use crate::state::{self, ContainerState, Root, Status};
use crate::{config_json, hooks, seccomp};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of `create` beyond the bundle itself.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub pid_file: Option<PathBuf>,
    /// Connected console socket fd (runc's --console-socket).
    pub console: Option<RawFd>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

/// Options of `exec`.
#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    pub pid_file: Option<PathBuf>,
    pub console: Option<RawFd>,
    pub preserve_fds: i32,
    /// Exec into a paused container too (runc's --ignore-paused): the new process joins
    /// the frozen cgroup and runs once the container is resumed.
    pub ignore_paused: bool,
}

/// A runtime rooted at a state directory (`--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: Root,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    // Atomic: callers (containerd's shim) may read it as soon as it exists.
    let tmp = path.with_extension("tmp-skiff");
    std::fs::write(&tmp, pid.to_string()).step(|| format!("write pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).step(|| format!("write pid file {}", path.display()))
}

/// Wait until `pid` exits (it need not be our child), up to `timeout`.
pub fn wait_exit(pid: i32, start: u64, timeout: Duration) -> bool {
    let gone = || state::proc_stat(pid).is_none_or(|(s, st)| st != start || s == 'Z' || s == 'X');
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        unsafe { libc::poll(&mut pfd, 1, ms) };
        return gone();
    }
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if gone() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    gone()
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Ok(Runtime {
            root: Root::new(root)?,
        })
    }

    /// Create a container from `bundle`: its init runs up to the user process and waits for `start`.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<ContainerState> {
        let lock = self.root.lock(id, true)?;
        let dir = self.root.dir(id);
        let mut cleanup = Cleanup {
            dir: dir.clone(),
            pid: None,
            cgroup: None,
            armed: true,
        };
        // The lock's fd is closed in the child with every other inherited fd.
        let st = self.create_locked(id, bundle, opts, &mut cleanup)?;
        cleanup.armed = false;
        drop(lock);
        Ok(st)
    }

    fn create_locked(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOptions,
        cleanup: &mut Cleanup,
    ) -> Result<ContainerState> {
        let bundle =
            std::fs::canonicalize(bundle).step(|| format!("bundle {}", bundle.display()))?;
        let spec = config_json::load(&bundle)?;
        let rootfs = config_json::rootfs(&spec, &bundle)?;
        let process = spec
            .process()
            .clone()
            .ok_or_else(|| Error::InvalidConfig("process is missing".into()))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidConfig(
                "process.args must not be empty".into(),
            ));
        }
        let linux = spec.linux().as_ref().expect("validated");
        let plan = Plan::new(linux.namespaces().as_deref().unwrap_or(&[]))?;
        if process.terminal() == Some(true) && opts.console.is_none() {
            return Err(Error::InvalidConfig(
                "process.terminal is set but no console socket was given (--console-socket)".into(),
            ));
        }
        let seccomp = match linux.seccomp() {
            Some(s) => Some((seccomp::compile(s)?, seccomp::flags(s))),
            None => None,
        };
        warn_caps(&process);
        let agent = SeccompAgent::new(linux.seccomp().as_ref())?;
        let stub = crate::exeseal::exec_stub()?;

        let cg_path = cgroups::normalize_path(linux.cgroups_path().as_deref(), id)?;
        let cgroup = Manager::open(&cg_path)?;
        cgroup.create()?;
        cleanup.cgroup = Some(cgroup.clone());
        cgroup.apply(
            linux
                .resources()
                .as_ref()
                .unwrap_or(&LinuxResources::default()),
        )?;

        let dir = self.root.dir(id);
        let fifo_path = dir.join(state::FIFO_FILE);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .step(|| format!("create {}", fifo_path.display()))?;
        // Writable by the container's user, whoever it is (mkfifo applied our umask).
        std::fs::set_permissions(
            &fifo_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o622),
        )
        .step(|| format!("chmod {}", fifo_path.display()))?;
        let fifo = nix::fcntl::open(
            &fifo_path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .step(|| format!("open {}", fifo_path.display()))?;

        let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
        let mut st = ContainerState {
            id: id.to_string(),
            pid: 0,
            pid_start: 0,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: now_rfc3339(),
            owner: String::new(),
            started: false,
            cgroup_path: cg_path,
            annotations,
            config: spec.clone(),
        };
        let hook_state = |st: &ContainerState, s: Status| st.oci_json(s);

        let (mut parent, child) = Channel::pair()?;
        let args = InitArgs {
            spec: &spec,
            process: &process,
            rootfs: &rootfs,
            plan: &plan,
            cgroup: &cgroup,
            seccomp,
            fifo: Some(fifo.as_raw_fd()),
            console: opts.console,
            preserve_fds: opts.preserve_fds,
            no_pivot: opts.no_pivot,
            no_new_keyring: opts.no_new_keyring,
            state: hook_state(&st, Status::Creating),
            exec: false,
            seccomp_agent: agent.as_ref().map(|a| a.child_fd()),
            stub: stub.as_ref().map(|f| f.as_raw_fd()),
        };
        let first = match unsafe { fork() }.step(|| "fork")? {
            ForkResult::Child => {
                drop(parent);
                init::run(args, child)
            }
            ForkResult::Parent { child: pid } => pid,
        };
        drop(child);
        cleanup.pid = Some(first.as_raw());
        let reap_first = plan.fork_init;

        loop {
            match parent.recv()? {
                Some(Msg::Userns) => {
                    namespaces::write_id_maps(
                        first.as_raw(),
                        linux.uid_mappings().as_deref().unwrap_or(&[]),
                        linux.gid_mappings().as_deref().unwrap_or(&[]),
                    )?;
                    parent.send(&Msg::Ack { state: None })?;
                }
                Some(Msg::Pid { pid }) => {
                    if reap_first {
                        let _ = nix::sys::wait::waitpid(first, None);
                    }
                    cleanup.pid = Some(pid);
                    st.pid = pid;
                    st.pid_start = state::proc_stat(pid).map(|(_, s)| s).unwrap_or(0);
                }
                Some(Msg::Hooks) => {
                    let hs = hook_state(&st, Status::Creating);
                    if let Some(h) = spec.hooks() {
                        hooks::run("prestart", h.prestart().as_deref().unwrap_or(&[]), &hs)?;
                        hooks::run(
                            "createRuntime",
                            h.create_runtime().as_deref().unwrap_or(&[]),
                            &hs,
                        )?;
                    }
                    parent.send(&Msg::Ack {
                        state: Some(hook_state(&st, Status::Created)),
                    })?;
                }
                Some(Msg::Seccomp) => {
                    let a = agent.as_ref().ok_or_else(|| {
                        Error::Init("container init sent a seccomp fd nobody asked for".into())
                    })?;
                    a.hand_over(st.pid, &hook_state(&st, Status::Creating))?;
                    parent.send(&Msg::Ack { state: None })?;
                }
                Some(Msg::Ready) => break,
                Some(Msg::Error { msg }) => return Err(Error::Init(msg)),
                Some(Msg::Ack { .. }) | Some(Msg::ExecFailed { .. }) => {
                    return Err(Error::Init(
                        "unexpected message from container init during setup".into(),
                    ))
                }
                None => return Err(Error::Init("container init exited during setup".into())),
            }
        }
        if st.pid_start == 0 {
            return Err(Error::Init("container init exited during setup".into()));
        }
        self.root.save(&st)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, st.pid)?;
        }
        Ok(st)
    }

    /// Load a container's state and current status (no lock held).
    pub fn state(&self, id: &str) -> Result<(ContainerState, Status)> {
        state::check_id(id)?;
        let st = self.root.load(id)?;
        let status = st.status(&self.root.dir(id));
        Ok((st, status))
    }

    pub fn list(&self) -> Result<Vec<(ContainerState, Status)>> {
        let mut out = Vec::new();
        for id in self.root.list()? {
            if let Ok(s) = self.state(&id) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Let a created container run its user process.
    pub fn start(&self, id: &str) -> Result<()> {
        let _lock = self.root.lock(id, false)?;
        let (mut st, status) = self.state(id)?;
        if status != Status::Created {
            return Err(Error::State {
                id: id.into(),
                status: status.to_string(),
                what: "cannot start a container that is not created".into(),
            });
        }
        let fifo_path = self.root.dir(id).join(state::FIFO_FILE);
        let fifo = nix::fcntl::open(
            &fifo_path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .step(|| format!("open {}", fifo_path.display()))?;
        let mut buf = [0u8; 1];
        loop {
            let mut pfd = libc::pollfd {
                fd: fifo.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            unsafe { libc::poll(&mut pfd, 1, 50) };
            match nix::unistd::read(&fifo, &mut buf) {
                Ok(1) => break,
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => {
                    if !st.init_alive() {
                        return Err(Error::Init(format!(
                            "container {id} init exited before start"
                        )));
                    }
                }
                Err(e) => return Err(e).step(|| "read exec fifo"),
            }
        }
        let _ = std::fs::remove_file(&fifo_path);
        st.started = true;
        self.root.save(&st)?;
        if let Some(h) = st
            .config
            .hooks()
            .as_ref()
            .and_then(|h| h.poststart().clone())
        {
            // The spec says a failing poststart hook is logged and the lifecycle goes on.
            if let Err(e) = hooks::run("poststart", &h, &st.oci_json(Status::Running)) {
                crate::log::warn(&e.to_string());
            }
        }
        Ok(())
    }

    /// Signal the init process, or with `all` every process in the container's cgroup.
    pub fn kill(&self, id: &str, sig: Signal, all: bool) -> Result<()> {
        let (st, status) = self.state(id)?;
        if status == Status::Stopped && !all {
            return Err(Error::State {
                id: id.into(),
                status: status.to_string(),
                what: "container not running".into(),
            });
        }
        if all {
            let cg = Manager::open(&st.cgroup_path)?;
            cg.signal_all(sig)?;
            if sig == Signal::SIGKILL && cg.is_frozen() {
                cg.freeze(false)?; // frozen tasks only die once thawed
            }
            return Ok(());
        }
        kill(Pid::from_raw(st.pid), sig)
            .step(|| format!("send {sig} to container {id} (pid {})", st.pid))
    }

    /// Remove a container. A running one needs `force` (it is killed first).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _lock = self.root.lock(id, false)?;
        let (st, status) = match self.state(id) {
            Ok(s) => s,
            Err(Error::NotFound(_)) => {
                // A directory without state is debris of a crashed create: remove it.
                return self.root.remove(id);
            }
            Err(e) => return Err(e),
        };
        let cg = Manager::open(&st.cgroup_path)?;
        match status {
            Status::Stopped => {}
            Status::Created => self.stop_init(&st, &cg),
            Status::Running | Status::Paused | Status::Creating if force => {
                self.stop_init(&st, &cg)
            }
            _ => {
                return Err(Error::State {
                    id: id.into(),
                    status: status.to_string(),
                    what: "cannot delete a container that is not stopped (use --force)".into(),
                })
            }
        }
        cg.destroy()?;
        let own_mnt = st
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Mount));
        if !own_mnt {
            // Its mounts were made in our namespace: do not leave them behind.
            crate::mounts::unmount_below(&st.rootfs)?;
        }
        if let Some(h) = st
            .config
            .hooks()
            .as_ref()
            .and_then(|h| h.poststop().clone())
        {
            if let Err(e) = hooks::run("poststop", &h, &st.oci_json(Status::Stopped)) {
                crate::log::warn(&e.to_string());
            }
        }
        self.root.remove(id)
    }

    fn stop_init(&self, st: &ContainerState, cg: &Manager) {
        let _ = cg.signal_all(Signal::SIGKILL);
        if st.init_alive() {
            let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
        }
        if cg.is_frozen() {
            let _ = cg.freeze(false);
        }
        wait_exit(st.pid, st.pid_start, Duration::from_secs(10));
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let (st, status) = self.state(id)?;
        if status != Status::Running && status != Status::Created {
            return Err(Error::State {
                id: id.into(),
                status: status.to_string(),
                what: "cannot pause a container that is not running".into(),
            });
        }
        Manager::open(&st.cgroup_path)?.freeze(true)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let (st, status) = self.state(id)?;
        if status != Status::Paused {
            return Err(Error::State {
                id: id.into(),
                status: status.to_string(),
                what: "cannot resume a container that is not paused".into(),
            });
        }
        Manager::open(&st.cgroup_path)?.freeze(false)
    }

    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (st, _) = self.state(id)?;
        Manager::open(&st.cgroup_path)?.pids()
    }

    pub fn stats(&self, id: &str) -> Result<cgroups::Stats> {
        let (st, status) = self.state(id)?;
        if status == Status::Stopped {
            return Err(Error::State {
                id: id.into(),
                status: status.to_string(),
                what: "container is not running".into(),
            });
        }
        Ok(Manager::open(&st.cgroup_path)?.stats())
    }

    /// Change resource limits of a live container; the stored config follows.
    pub fn update(&self, id: &str, res: &LinuxResources) -> Result<()> {
        let _lock = self.root.lock(id, false)?;
        let (mut st, status) = self.state(id)?;
        if status == Status::Stopped {
            return Err(Error::State {
                id: id.into(),
                status: status.to_string(),
                what: "cannot update a stopped container".into(),
            });
        }
        // Apply the merged set, not the delta: device rules in particular are rebuilt
        // from scratch, so a partial update must still carry the container's own.
        let merged = merge_resources(
            st.config
                .linux()
                .as_ref()
                .and_then(|l| l.resources().clone())
                .unwrap_or_default(),
            res,
        );
        Manager::open(&st.cgroup_path)?.apply(&merged)?;
        if let Some(l) = st.config.linux_mut() {
            l.set_resources(Some(merged));
        }
        self.root.save(&st)
    }

    /// Run a new process inside a running container; returns its host pid.
    /// The caller reaps it (it is re-parented to the nearest subreaper).
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let (st, status) = self.state(id)?;
        match status {
            Status::Running => {}
            Status::Paused if opts.ignore_paused => {}
            Status::Paused => {
                return Err(Error::State {
                    id: id.into(),
                    status: status.to_string(),
                    what: "cannot exec in a paused container (use --ignore-paused to override)"
                        .into(),
                })
            }
            _ => {
                return Err(Error::State {
                    id: id.into(),
                    status: status.to_string(),
                    what: "cannot exec in a container that is not running".into(),
                })
            }
        }
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidConfig(
                "exec needs a command (process.args)".into(),
            ));
        }
        if process.terminal() == Some(true) && opts.console.is_none() {
            return Err(Error::InvalidConfig(
                "a terminal was requested but no console socket was given".into(),
            ));
        }
        let linux = st.config.linux().as_ref().expect("stored config is valid");
        // Join every namespace of the init process (also those it joined by path).
        let mut ns = Vec::new();
        for n in linux.namespaces().iter().flatten() {
            let mut e = n.clone();
            e.set_path(Some(PathBuf::from(format!(
                "/proc/{}/ns/{}",
                st.pid,
                namespaces::proc_name(n.typ())
            ))));
            ns.push(e);
        }
        let plan = Plan::new(&ns)?;
        let seccomp = match linux.seccomp() {
            Some(s) => Some((seccomp::compile(s)?, seccomp::flags(s))),
            None => None,
        };
        warn_caps(process);
        let agent = SeccompAgent::new(linux.seccomp().as_ref())?;
        let stub = crate::exeseal::exec_stub()?;
        let cgroup = Manager::open(&st.cgroup_path)?;
        let spec: &Spec = &st.config;
        let (mut parent, child) = Channel::pair()?;
        let args = InitArgs {
            spec,
            process,
            rootfs: &st.rootfs,
            plan: &plan,
            cgroup: &cgroup,
            seccomp,
            fifo: None,
            console: opts.console,
            preserve_fds: opts.preserve_fds,
            no_pivot: false,
            no_new_keyring: true,
            state: st.oci_json(status),
            exec: true,
            seccomp_agent: agent.as_ref().map(|a| a.child_fd()),
            stub: stub.as_ref().map(|f| f.as_raw_fd()),
        };
        let first = match unsafe { fork() }.step(|| "fork")? {
            ForkResult::Child => {
                drop(parent);
                init::run(args, child)
            }
            ForkResult::Parent { child: pid } => pid,
        };
        drop(child);
        let mut pid = None;
        loop {
            match parent.recv() {
                Ok(Some(Msg::Pid { pid: p })) => {
                    if plan.fork_init {
                        let _ = nix::sys::wait::waitpid(first, None);
                    }
                    pid = Some(p);
                }
                Ok(Some(Msg::Seccomp)) => {
                    let (a, p) = agent.as_ref().zip(pid).ok_or_else(|| {
                        Error::Init("exec process sent an unexpected seccomp fd".into())
                    })?;
                    a.hand_over(p, &st.oci_json(Status::Running))?;
                    parent.send(&Msg::Ack { state: None })?;
                }
                Ok(Some(Msg::Error { msg })) => return Err(Error::Init(msg)),
                Ok(Some(Msg::ExecFailed { errno })) => {
                    let arg0 = process.args().as_ref().and_then(|a| a.first());
                    return Err(Error::Sys {
                        step: format!("exec {}", arg0.map_or("", |s| s.as_str())),
                        errno: nix::errno::Errno::from_raw(errno),
                    });
                }
                Ok(Some(other)) => {
                    return Err(Error::Init(format!(
                        "unexpected message from exec process: {other:?}"
                    )))
                }
                // EOF: the channel closed on a successful execve.
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        let pid = pid.ok_or_else(|| Error::Init("exec process exited during setup".into()))?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }
}

/// A seccomp agent (linux.seccomp.listenerPath): the socket pair on which the child
/// passes its notification fd, and where the fd goes with the container process state.
struct SeccompAgent {
    path: PathBuf,
    metadata: Option<String>,
    ours: std::os::unix::net::UnixStream,
    theirs: std::os::unix::net::UnixStream,
}

impl SeccompAgent {
    fn new(s: Option<&oci_spec::runtime::LinuxSeccomp>) -> Result<Option<SeccompAgent>> {
        let Some(s) = s else { return Ok(None) };
        let Some(path) = seccomp::listener(s)? else {
            return Ok(None);
        };
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().step(|| "create seccomp fd socketpair")?;
        Ok(Some(SeccompAgent {
            path,
            metadata: s.listener_metadata().clone(),
            ours,
            theirs,
        }))
    }

    fn child_fd(&self) -> RawFd {
        self.theirs.as_raw_fd()
    }

    fn hand_over(&self, pid: i32, state: &serde_json::Value) -> Result<()> {
        let fd = crate::channel::recv_fd(self.ours.as_raw_fd())?;
        seccomp::send_to_listener(
            &self.path,
            fd.as_raw_fd(),
            pid,
            self.metadata.as_deref(),
            state,
        )
    }
}

/// Log what the process's capabilities leave out (the child applies the same silently).
fn warn_caps(p: &Process) {
    for w in crate::process::resolve_caps(p.capabilities().as_ref()).1 {
        crate::log::warn(&w);
    }
}

/// Overlay the set fields of `new` onto `old`.
fn merge_resources(old: LinuxResources, new: &LinuxResources) -> LinuxResources {
    let mut o = serde_json::to_value(&old).unwrap_or_default();
    let n = serde_json::to_value(new).unwrap_or_default();
    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) if !b.is_null() => *a = b.clone(),
            _ => {}
        }
    }
    merge(&mut o, &n);
    serde_json::from_value(o).unwrap_or(old)
}

/// Undo a failed create: kill what was started, remove the cgroup and the state directory.
struct Cleanup {
    dir: PathBuf,
    pid: Option<i32>,
    cgroup: Option<Manager>,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
