//! Pod sandboxes: the namespaces a pod's containers share (network, IPC, UTS), held for
//! the pod's life by bind-mounting their nsfs files under the runtime root, so no infra
//! process is needed. A sandbox also owns the pod cgroup (containers nest below it) and
//! the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf.

use crate::cgroups::{self, Manager};
use crate::error::{Context, Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Namespaces a sandbox holds, in the order they are created.
pub const KINDS: &[(&str, nix::sched::CloneFlags)] = &[
    ("net", nix::sched::CloneFlags::CLONE_NEWNET),
    ("ipc", nix::sched::CloneFlags::CLONE_NEWIPC),
    ("uts", nix::sched::CloneFlags::CLONE_NEWUTS),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub hostname: String,
    /// resolv.conf content: nameservers, search domains, options.
    pub dns_servers: Vec<String>,
    pub dns_searches: Vec<String>,
    pub dns_options: Vec<String>,
    /// Extra /etc/hosts lines (ip, names).
    pub hosts: Vec<(String, Vec<String>)>,
    /// Parent cgroup of the pod (default /skiff/pods).
    pub cgroup_parent: Option<String>,
    /// One PID namespace for all containers of the pod (CRI NamespaceMode POD).
    #[serde(default)]
    pub share_pid: bool,
    /// Binary the PID namespace holder execs as `<binary> pod-pause` (skiff-runtime), so it
    /// shows as itself in ps; without one it stays a fork of the caller.
    #[serde(default)]
    pub holder_binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub dir: PathBuf,
    pub hostname: String,
    /// cgroup path of the pod; containers use `<cgroup>/<container id>`.
    pub cgroup: String,
    /// The pod IP once networking (CNI) has set it.
    pub ip: Option<String>,
    /// The CNI attachment made by `network_add`, torn down by `remove`.
    #[serde(default)]
    pub cni: Option<CniAttachment>,
    /// pid and start time of the pod's PID namespace holder (pid 1 there), if shared.
    #[serde(default)]
    pub pid_holder: Option<(i32, u64)>,
}

/// How the pod's network was attached, kept so teardown can call the same plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CniAttachment {
    pub plugin: PathBuf,
    pub conf: serde_json::Value,
    pub ifname: String,
}

/// Run a CNI plugin for this sandbox, as the CNI spec has runtimes do.
fn cni_exec(sb: &Sandbox, a: &CniAttachment, command: &str) -> Result<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(&a.plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &sb.id)
        .env("CNI_NETNS", sb.ns_path("net"))
        .env("CNI_IFNAME", &a.ifname)
        .env("CNI_PATH", a.plugin.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .step(|| format!("run CNI plugin {}", a.plugin.display()))?;
    let conf = serde_json::to_vec(&a.conf).expect("serializes");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(&conf)
        .step(|| "write CNI config")?;
    let out = child.wait_with_output().step(|| "wait for CNI plugin")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    if !out.status.success() {
        let msg = v["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(Error::Init(format!(
            "CNI {command} for sandbox {} failed (code {}): {msg}",
            sb.id, v["code"]
        )));
    }
    Ok(v)
}

/// Attach the sandbox's network namespace with a CNI plugin; the first IP of the result
/// becomes the pod IP. On failure the plugin is asked to clean up (DEL).
pub fn network_add(
    root: &Path,
    id: &str,
    plugin: &Path,
    conf: &serde_json::Value,
    ifname: &str,
) -> Result<serde_json::Value> {
    let mut sb = load(root, id)?;
    let a = CniAttachment {
        plugin: plugin.to_path_buf(),
        conf: conf.clone(),
        ifname: ifname.into(),
    };
    // Recorded before ADD so a crash in between still gets a DEL at removal.
    sb.cni = Some(a.clone());
    sb.save()?;
    let result = match cni_exec(&sb, &a, "ADD") {
        Ok(r) => r,
        Err(e) => {
            let _ = cni_exec(&sb, &a, "DEL");
            sb.cni = None;
            sb.save()?;
            return Err(e);
        }
    };
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .ok_or_else(|| Error::Init(format!("CNI result without an address: {result}")))?;
    sb.set_ip(ip)?;
    Ok(result)
}

/// Detach the pod from its network (CNI DEL) but keep the sandbox: a stopped pod.
/// Idempotent: a sandbox without an attachment is left as it is.
pub fn network_del(root: &Path, id: &str) -> Result<()> {
    let mut sb = load(root, id)?;
    if let Some(a) = sb.cni.clone() {
        cni_exec(&sb, &a, "DEL")?;
        sb.cni = None;
        sb.ip = None;
        sb.save()?;
    }
    Ok(())
}

impl Sandbox {
    /// The shared PID namespace of the pod, while its holder lives.
    pub fn pid_ns_path(&self) -> Option<PathBuf> {
        let (pid, start) = self.pid_holder?;
        crate::state::proc_stat(pid)
            .is_some_and(|(s, st)| st == start && s != 'Z')
            .then(|| PathBuf::from(format!("/proc/{pid}/ns/pid")))
    }

    /// Path of a held namespace file (`net`, `ipc`, `uts`), as OCI `linux.namespaces[].path`.
    pub fn ns_path(&self, kind: &str) -> PathBuf {
        self.dir.join("ns").join(kind)
    }
    pub fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn resolv_path(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn hostname_path(&self) -> PathBuf {
        self.dir.join("hostname")
    }

    /// Record the pod IP (after CNI ADD) and add it to the pod's /etc/hosts.
    pub fn set_ip(&mut self, ip: &str) -> Result<()> {
        self.ip = Some(ip.to_string());
        let mut hosts = std::fs::read_to_string(self.hosts_path()).unwrap_or_default();
        hosts.push_str(&format!("{ip}\t{}\n", self.hostname));
        std::fs::write(self.hosts_path(), hosts).step(|| "write pod hosts file")?;
        self.save()
    }

    fn save(&self) -> Result<()> {
        let p = self.dir.join("sandbox.json");
        std::fs::write(&p, serde_json::to_vec(self).expect("serializes"))
            .step(|| format!("write {}", p.display()))
    }
}

/// Bring `lo` up in the current network namespace (SIOCSIFFLAGS), so the pod's
/// containers can talk over localhost even before (or without) CNI.
fn loopback_up() -> Result<()> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(nix::errno::Errno::last()).step(|| "socket for loopback setup");
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    let r = unsafe {
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(sock);
        r
    };
    nix::errno::Errno::result(r)
        .map(drop)
        .step(|| "bring up lo in the pod network namespace")
}

fn sandboxes_dir(root: &Path) -> PathBuf {
    root.join("sandboxes")
}

/// Create a sandbox: new net/ipc/uts namespaces (hostname set, lo up) pinned by bind
/// mounts, the pod cgroup and the pod's files. Anything created is undone on failure.
pub fn create(root: &Path, id: &str, cfg: &SandboxConfig) -> Result<Sandbox> {
    crate::state::check_id(id)?;
    let dir = sandboxes_dir(root).join(id);
    std::fs::create_dir_all(sandboxes_dir(root)).step(|| "create sandboxes dir")?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(format!("sandbox {id}")))
        }
        Err(e) => return Err(e).step(|| format!("create {}", dir.display())),
    }
    let cgroup = format!(
        "{}/{id}",
        cfg.cgroup_parent
            .as_deref()
            .unwrap_or("/skiff/pods")
            .trim_end_matches('/')
    );
    let sb = Sandbox {
        id: id.into(),
        dir: dir.clone(),
        hostname: if cfg.hostname.is_empty() {
            id.into()
        } else {
            cfg.hostname.clone()
        },
        cgroup: cgroups::normalize_path(Some(Path::new(&cgroup)), id)?,
        ip: None,
        cni: None,
        pid_holder: None,
    };
    // Saved first, so that `remove` finds the cgroup even if building fails half-way.
    let mut sb = sb;
    let res = sb.save().and_then(|()| build(&sb, cfg)).and_then(|()| {
        if cfg.share_pid {
            sb.pid_holder = Some(spawn_pid_holder(&sb, cfg.holder_binary.as_deref())?);
            sb.save()?;
        }
        Ok(())
    });
    if let Err(e) = res {
        let _ = remove(root, id);
        return Err(e);
    }
    Ok(sb)
}

/// A PID namespace cannot be pinned like the others (it dies with its pid 1), so a
/// tiny holder process is pid 1 there: it ignores SIGCHLD (the kernel reaps the
/// orphans it inherits) and sleeps until the sandbox is removed.
fn spawn_pid_holder(sb: &Sandbox, binary: Option<&Path>) -> Result<(i32, u64)> {
    use std::io::{Read, Write};
    let exec = binary
        .map(|b| std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).unwrap_or_default());
    let (mut rd, mut wr) = std::os::unix::net::UnixStream::pair().step(|| "socketpair")?;
    match unsafe { fork() }.step(|| "fork pid namespace holder")? {
        ForkResult::Child => {
            drop(rd);
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).is_err() {
                unsafe { libc::_exit(1) }
            }
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(wr);
                    let _ = nix::unistd::setsid();
                    unsafe {
                        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                        for fd in 0..3 {
                            libc::dup2(null, fd);
                        }
                        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                        if let Some(bin) = &exec {
                            let argv = [
                                c"skiff-runtime".as_ptr(),
                                c"pod-pause".as_ptr(),
                                std::ptr::null(),
                            ];
                            libc::execv(bin.as_ptr(), argv.as_ptr());
                        }
                        pause_forever()
                    }
                }
                Ok(ForkResult::Parent { child }) => {
                    let _ = wr.write_all(child.as_raw().to_string().as_bytes());
                    unsafe { libc::_exit(0) }
                }
                Err(_) => unsafe { libc::_exit(1) },
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            let _ = (&mut rd).take(64).read_to_string(&mut msg);
            let _ = nix::sys::wait::waitpid(child, None);
            let pid: i32 = msg.parse().map_err(|_| {
                Error::Init("could not start the pod's PID namespace holder".into())
            })?;
            let start = crate::state::proc_stat(pid).map_or(0, |(_, s)| s);
            Manager::open(&sb.cgroup)?.add(pid)?;
            Ok((pid, start))
        }
    }
}

/// pid 1 of a pod's PID namespace: let the kernel reap orphans, sleep until killed.
pub fn pause_forever() -> ! {
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"skiff-pause".as_ptr());
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        loop {
            libc::pause();
        }
    }
}

fn build(sb: &Sandbox, cfg: &SandboxConfig) -> Result<()> {
    Manager::open(&sb.cgroup)?.create()?;
    let nsdir = sb.dir.join("ns");
    std::fs::create_dir_all(&nsdir).step(|| "create ns dir")?;
    // A short-lived child makes the namespaces; we pin them, then let it go.
    let (mut rd, mut wr) = std::os::unix::net::UnixStream::pair().step(|| "socketpair")?;
    let hostname = sb.hostname.clone();
    match unsafe { fork() }.step(|| "fork sandbox holder")? {
        ForkResult::Child => {
            use std::io::{Read, Write};
            drop(rd);
            let flags = KINDS
                .iter()
                .fold(nix::sched::CloneFlags::empty(), |a, (_, f)| a | *f);
            let r = nix::sched::unshare(flags)
                .step(|| "unshare pod namespaces")
                .and_then(|()| {
                    nix::unistd::sethostname(&hostname).step(|| format!("set hostname {hostname}"))
                })
                .and_then(|()| loopback_up());
            let msg = match r {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = wr.write_all(msg.as_bytes());
            let _ = wr.shutdown(std::net::Shutdown::Write);
            let mut b = [0u8; 1];
            let _ = wr.read(&mut b); // wait until the parent pinned the namespaces
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            use std::io::{Read, Write};
            drop(wr);
            let mut msg = String::new();
            let _ = (&mut rd).take(4096).read_to_string(&mut msg);
            let pinned = if msg == "ok" {
                KINDS.iter().try_for_each(|(kind, _)| {
                    let target = nsdir.join(kind);
                    std::fs::File::create(&target)
                        .step(|| format!("create {}", target.display()))?;
                    let src = format!("/proc/{}/ns/{kind}", child.as_raw());
                    mount(
                        Some(src.as_str()),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .step(|| format!("pin {kind} namespace at {}", target.display()))
                })
            } else {
                Err(Error::Init(msg))
            };
            let _ = rd.write_all(b"x");
            let _ = nix::sys::wait::waitpid(child, None);
            pinned?;
        }
    }
    std::fs::write(sb.hostname_path(), format!("{}\n", sb.hostname)).step(|| "write hostname")?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (ip, names) in &cfg.hosts {
        hosts.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    std::fs::write(sb.hosts_path(), hosts).step(|| "write hosts")?;
    let mut resolv = String::new();
    // One search line: a resolver keeps only the last of several (glibc, musl).
    if !cfg.dns_searches.is_empty() {
        resolv.push_str(&format!("search {}\n", cfg.dns_searches.join(" ")));
    }
    for s in &cfg.dns_servers {
        resolv.push_str(&format!("nameserver {s}\n"));
    }
    if !cfg.dns_options.is_empty() {
        resolv.push_str(&format!("options {}\n", cfg.dns_options.join(" ")));
    }
    std::fs::write(sb.resolv_path(), resolv).step(|| "write resolv.conf")
}

pub fn load(root: &Path, id: &str) -> Result<Sandbox> {
    crate::state::check_id(id)?;
    let p = sandboxes_dir(root).join(id).join("sandbox.json");
    let text = std::fs::read_to_string(&p).map_err(|_| Error::NotFound(format!("sandbox {id}")))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidConfig(format!("corrupt {}: {e}", p.display())))
}

/// Tear a sandbox down, tolerating parts that are already gone: unpin the namespaces
/// (the kernel frees them with the last user), remove the pod cgroup and the files.
pub fn remove(root: &Path, id: &str) -> Result<()> {
    crate::state::check_id(id)?;
    let dir = sandboxes_dir(root).join(id);
    if !dir.exists() {
        return Ok(());
    }
    let sb = load(root, id).ok();
    // Network first, while the namespace is still pinned; CNI DEL is idempotent.
    if let Some((sb, a)) = sb.as_ref().and_then(|sb| sb.cni.as_ref().map(|a| (sb, a))) {
        cni_exec(sb, a, "DEL")?;
    }
    if let Some((pid, start)) = sb.as_ref().and_then(|s| s.pid_holder) {
        if crate::state::proc_stat(pid).is_some_and(|(_, st)| st == start) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            crate::container::wait_exit(pid, start, std::time::Duration::from_secs(5));
        }
    }
    for (kind, _) in KINDS {
        let p = dir.join("ns").join(kind);
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e).step(|| format!("unpin {}", p.display())),
        }
    }
    if let Some(sb) = sb {
        Manager::open(&sb.cgroup)?.destroy()?;
    }
    std::fs::remove_dir_all(&dir).step(|| format!("remove {}", dir.display()))
}
