//! The child side of create and exec: everything between fork and execve.
//!
//! Stage one joins the cgroup and namespaces (a new user namespace first, waiting for
//! the runtime to write its id maps); pid and time namespaces only take effect for
//! children, so when either is set stage one forks the real init and exits.

use crate::cgroups::Manager;
use crate::channel::{Channel, Msg};
use crate::error::{Context, Error, Result};
use crate::namespaces::Plan;
use crate::process;
use crate::{devices, hooks, mounts, seccomp};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// Everything the child needs, prepared by the parent before fork.
pub struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub rootfs: &'a Path,
    pub plan: &'a Plan,
    pub cgroup: &'a Manager,
    pub seccomp: Option<(Vec<seccomp::SockFilter>, u32)>,
    /// O_PATH fd of the exec fifo (create only).
    pub fifo: Option<RawFd>,
    /// Socket to send a pty master on, when process.terminal is set.
    pub console: Option<RawFd>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// State JSON for createContainer/startContainer hooks.
    pub state: serde_json::Value,
    /// Exec into an existing container: skip rootfs setup.
    pub exec: bool,
    /// With a seccomp listener: the socket on which the notification fd goes to the
    /// runtime, which hands it to the agent. The filter is then loaded during setup.
    pub seccomp_agent: Option<RawFd>,
    /// The sealed exec stub (exeseal::exec_stub) the final execve goes through.
    pub stub: Option<RawFd>,
}

static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run the child; never returns. Errors go to the parent over the channel.
pub fn run(args: InitArgs, mut chan: Channel) -> ! {
    // Not dumpable until the final execve: no container process may open this one's
    // /proc entries (exe, fds, memory) while it still holds the runtime's privileges.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    close_inherited_fds(&args, &chan);
    let res = stage_one(&args, &mut chan).and_then(|()| {
        if args.exec {
            exec_process(&args, &mut chan)
        } else {
            container_init(&args, &mut chan)
        }
    });
    let msg = match res {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    // After Ready the runtime no longer listens: the container's stderr is the only witness.
    if chan.send(&Msg::Error { msg: msg.clone() }).is_err()
        || READY.load(std::sync::atomic::Ordering::Relaxed)
    {
        eprintln!("skiff-runtime init: {msg}");
    }
    unsafe { libc::_exit(1) }
}

/// Close every fd but stdio, the preserved ones and those setup uses, before any path
/// from the spec is resolved: an inherited directory fd would otherwise let
/// `cwd: /proc/self/fd/N` (or a mount source) reach the host (CVE-2024-21626).
fn close_inherited_fds(a: &InitArgs, chan: &Channel) {
    let first_free = 3 + a.preserve_fds.max(0) as u32;
    let mut keep: Vec<u32> = chan.fds().iter().map(|f| *f as u32).collect();
    keep.extend(
        a.fifo
            .iter()
            .chain(a.console.iter())
            .chain(a.seccomp_agent.iter())
            .chain(a.stub.iter())
            .map(|f| *f as u32),
    );
    // Namespace files the spec names, opened (close-on-exec) for joining.
    keep.extend(a.plan.join.iter().map(|(_, f)| f.as_raw_fd() as u32));
    keep.retain(|f| *f >= first_free);
    keep.sort_unstable();
    keep.dedup();
    let mut from = first_free;
    for k in keep {
        if k > from {
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0u32) };
        }
        from = k + 1;
    }
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

/// Give the container a clean signal state: the runtime may have blocked signals (to
/// forward them) and Rust ignores SIGPIPE; neither must leak into the container.
fn reset_signals() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

fn stage_one(a: &InitArgs, chan: &mut Channel) -> Result<()> {
    reset_signals();
    a.cgroup.add(nix::unistd::getpid().as_raw())?;
    a.plan.join_all()?;
    if a.plan.new_user {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
            .step(|| "create user namespace")?;
        chan.send(&Msg::Userns)?;
        chan.expect_ack()?;
        let root = nix::unistd::Uid::from_raw(0);
        let rootg = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(rootg, rootg, rootg)
            .step(|| "become gid 0 in the user namespace")?;
        nix::unistd::setresuid(root, root, root).step(|| "become uid 0 in the user namespace")?;
    }
    if !a.plan.unshare.is_empty() {
        nix::sched::unshare(a.plan.unshare)
            .step(|| format!("unshare namespaces {:?}", a.plan.unshare))?;
    }
    if a.plan.fork_init {
        // The new init must not speak on the channel before its pid has been sent, or the
        // runtime could read its Hooks and Ready first and record pid 0. It waits for the
        // pipe to close: this process closes it by exiting after sending the pid.
        let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .step(|| "create the init's start gate")?;
        match unsafe { fork() }.step(|| "fork container init")? {
            ForkResult::Parent { child } => {
                drop(gate_r);
                let _ = chan.send(&Msg::Pid {
                    pid: child.as_raw(),
                });
                drop(gate_w);
                unsafe { libc::_exit(0) }
            }
            ForkResult::Child => {
                drop(gate_w);
                let mut gate = std::fs::File::from(gate_r);
                let mut b = [0u8; 1];
                // EOF: the pid is on its way (an error would mean the same).
                let _ = std::io::Read::read(&mut gate, &mut b);
            }
        }
    } else {
        chan.send(&Msg::Pid {
            pid: nix::unistd::getpid().as_raw(),
        })?;
    }
    Ok(())
}

fn write_sysctls(spec: &Spec) -> Result<()> {
    for (k, v) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
    {
        if k.contains("..") {
            return Err(Error::InvalidConfig(format!(
                "sysctl {k:?} is not a sysctl name"
            )));
        }
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&p, v).step(|| format!("set sysctl {k}={v}"))?;
    }
    Ok(())
}

fn container_init(a: &InitArgs, chan: &mut Channel) -> Result<std::convert::Infallible> {
    let spec = a.spec;
    let linux = spec.linux().as_ref().expect("validated");
    let in_userns = a.plan.has(LinuxNamespaceType::User);

    // Without a mount namespace of its own the container inherits the caller's (the
    // runtime spec's rule): its mounts are made there, as runc makes them, and it is
    // chroot'ed rather than pivoted (a pivot would move the caller's root).
    let own_mnt = a.plan.has(LinuxNamespaceType::Mount);
    if own_mnt {
        mounts::prepare_rootfs(a.rootfs, linux.rootfs_propagation().as_deref())?;
    }
    let v1 = a.cgroup.v1_hierarchies();
    let ctx = mounts::MountContext {
        rootfs: a.rootfs,
        cgroup_v1: &v1,
        in_user_ns: in_userns,
    };
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    mounts::mount_all(&spec_mounts, &ctx)?;
    // A fresh /dev (tmpfs) gets the default nodes and links; device nodes from the config always.
    let dev_mounted = spec_mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev"));
    let mut nodes = if dev_mounted {
        devices::defaults()
    } else {
        Vec::new()
    };
    nodes.extend(linux.devices().iter().flatten().map(devices::from_spec));
    devices::create(a.rootfs, &nodes, in_userns)?;
    if dev_mounted {
        devices::symlinks(a.rootfs)?;
    }
    // The working directory must exist (runc creates it too).
    let cwd = mounts::secure_join(a.rootfs, a.process.cwd());
    if !cwd.exists() {
        std::fs::create_dir_all(&cwd)
            .step(|| format!("create cwd {}", a.process.cwd().display()))?;
    }

    chan.send(&Msg::Hooks)?;
    let state = chan.expect_ack()?.unwrap_or_else(|| a.state.clone());
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        hooks::run("createContainer", &h, &state)?;
    }

    if own_mnt {
        mounts::enter_rootfs(a.rootfs, a.no_pivot)?;
        mounts::set_root_propagation(linux.rootfs_propagation().as_deref())?;
    } else {
        mounts::chroot_into(a.rootfs)?;
    }
    write_sysctls(spec)?;
    if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).step(|| format!("set hostname {h}"))?;
    }
    if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
        let c = CString::new(d.as_str())
            .map_err(|_| Error::InvalidConfig("domainname has a NUL".into()))?;
        nix::errno::Errno::result(unsafe { libc::setdomainname(c.as_ptr(), d.len()) })
            .step(|| format!("set domainname {d}"))?;
    }
    for p in linux.readonly_paths().iter().flatten() {
        mounts::readonly_path(p)?;
    }
    for p in linux.masked_paths().iter().flatten() {
        mounts::mask_path(p)?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        mounts::readonly_root()?;
    }

    let (env, argv0) = prepare_process(a, chan)?;
    chan.send(&Msg::Ready)?;
    READY.store(true, std::sync::atomic::Ordering::Relaxed);
    // The init stays non-dumpable while it waits for `start` (a created container's
    // processes must not reach it); its own /proc/self/fd stays open to it regardless.

    // Block until `start` opens the fifo for reading. startContainer hooks run before the
    // byte that releases `start`, so they always precede its poststart hooks.
    let fifo = a.fifo.expect("create has a fifo");
    let fd = nix::fcntl::open(
        format!("/proc/self/fd/{fifo}").as_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| "open exec fifo")?;
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().clone())
    {
        // Without an env of its own the hook gets the container process's, as in runc.
        hooks::run_with_env("startContainer", &h, &state, Some(&env))?;
    }
    nix::unistd::write(&fd, b"0").step(|| "write exec fifo")?;
    drop(fd);
    // Nobody listens on the channel any more: a failing execve is told on stderr.
    finish_and_exec(a, &env, &argv0, None)
}

/// Console, limits, identity: the steps shared by container init and exec. Returns the
/// environment and resolved executable.
fn prepare_process(a: &InitArgs, chan: &mut Channel) -> Result<(Vec<String>, PathBuf)> {
    let p = a.process;
    let linux = a.spec.linux().as_ref().expect("validated");
    if p.terminal() == Some(true) {
        let sock = a.console.ok_or_else(|| {
            Error::InvalidConfig("process.terminal needs a console socket".into())
        })?;
        let size = p
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::console::setup_pty(sock, size)?;
    } else {
        let _ = nix::unistd::setsid();
    }
    if !a.no_new_keyring && !a.exec {
        // A fresh session keyring per container; ENOSYS/EPERM (e.g. in nested setups) is not fatal.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                1, /* KEYCTL_JOIN_SESSION_KEYRING */
                std::ptr::null::<libc::c_char>(),
            )
        };
    }
    if let Some(pers) = linux.personality() {
        let dom = match pers.domain() {
            oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
            _ => 0,
        };
        nix::errno::Errno::result(unsafe { libc::personality(dom) }).step(|| "set personality")?;
    }
    if let Some(adj) = p.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    if let Some(rl) = p.rlimits() {
        process::set_rlimits(rl)?;
    }
    if let Some(io) = p.io_priority() {
        let class = match io.class() {
            oci_spec::runtime::IOPriorityClass::IoprioClassRt => 1,
            oci_spec::runtime::IOPriorityClass::IoprioClassBe => 2,
            oci_spec::runtime::IOPriorityClass::IoprioClassIdle => 3,
        };
        let prio = (class << 13) | (io.priority() as i32 & 0x1fff);
        nix::errno::Errno::result(unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                1, /* IOPRIO_WHO_PROCESS */
                0,
                prio,
            )
        })
        .step(|| "set io priority")?;
    }
    if let Some(mp) = linux.memory_policy() {
        crate::mempolicy::apply(&crate::mempolicy::plan(mp)?)?;
    }
    nix::unistd::chdir(p.cwd()).step(|| format!("chdir to cwd {}", p.cwd().display()))?;
    check_cwd_inside(p.cwd())?;
    let uid = p.user().uid();
    let env = process::environment(p, || process::home_of(uid));
    let args = p.args().clone().unwrap_or_default();
    let exe = process::find_executable(args.first().map(String::as_str).unwrap_or(""), &env)?;

    let nnp = p.no_new_privileges() == Some(true);
    match (&a.seccomp, a.seccomp_agent) {
        // An agent gets the notification fd through the runtime, which waits for it: load
        // the filter now, while the runtime listens.
        (Some((prog, flags)), Some(sock)) => {
            if nnp {
                set_no_new_privs()?;
            }
            let fd = seccomp::install(prog, *flags | seccomp::FLAG_NEW_LISTENER)
                .step(|| "load seccomp filter")?;
            crate::channel::send_fd(sock, fd)?;
            unsafe { libc::close(fd) };
            chan.send(&Msg::Seccomp)?;
            chan.expect_ack()?;
        }
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: before dropping caps.
        (Some((prog, flags)), None) if !nnp => {
            seccomp::install(prog, *flags).step(|| "load seccomp filter")?;
        }
        _ => {}
    }
    // The runtime logged what this leaves out, before fork (here stderr may be the pty).
    let (caps, _) = process::resolve_caps(p.capabilities().as_ref());
    process::drop_bounding(caps.bounding)?;
    let gids = p.user().additional_gids().clone().unwrap_or_default();
    process::set_user(uid, p.user().gid(), &gids, a.plan.new_user)?;
    process::set_caps(&caps)?;
    Ok((env, exe))
}

/// The working directory must resolve inside the container's root: getcwd(2) reports
/// a directory outside it as "(unreachable)" (glibc as ENOENT).
fn check_cwd_inside(cwd: &Path) -> Result<()> {
    match std::env::current_dir() {
        Ok(p) if p.is_absolute() => Ok(()),
        _ => Err(Error::InvalidConfig(format!(
            "process.cwd {} resolves outside the container's root filesystem",
            cwd.display()
        ))),
    }
}

fn set_no_new_privs() -> Result<()> {
    nix::errno::Errno::result(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map(drop)
        .step(|| "set no_new_privs")
}

/// The final execve, through the exec stub where there is one. `report` is the channel
/// fd the stub tells a failed execve on (it closes with a successful one).
fn finish_and_exec(
    a: &InitArgs,
    env: &[String],
    exe: &Path,
    report: Option<RawFd>,
) -> Result<std::convert::Infallible> {
    let p = a.process;
    if p.no_new_privileges() == Some(true) {
        set_no_new_privs()?;
        match &a.seccomp {
            // As late as possible: the fewest syscalls run under the filter.
            Some((prog, flags)) if a.seccomp_agent.is_none() => {
                seccomp::install(prog, *flags).step(|| "load seccomp filter")?;
            }
            _ => {}
        }
    }
    let argv = process::cstrings(p.args().as_deref().unwrap_or(&[]))?;
    let envp = process::cstrings(env)?;
    let path = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidConfig("executable path has a NUL".into()))?;
    // Everything above fd 2 + preserve_fds must not leak into the container.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 + a.preserve_fds as u32,
            u32::MAX,
            4, /* CLOSE_RANGE_CLOEXEC */
        )
    };
    unsafe { libc::umask(p.user().umask().unwrap_or(0o022) as libc::mode_t) };
    if let Some(stub) = a.stub {
        if let Some(fd) = report {
            // Open across the stub's execve, closed by the container program's.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        }
        let report = CString::new(report.map_or(-1, |f| f as i64).to_string()).expect("digits");
        let mut sargv: Vec<*const libc::c_char> =
            vec![c"skiff-exec".as_ptr(), report.as_ptr(), path.as_ptr()];
        sargv.extend(argv.iter().map(|a| a.as_ptr()));
        sargv.push(std::ptr::null());
        let mut senv: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        senv.push(std::ptr::null());
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                stub,
                c"".as_ptr(),
                sargv.as_ptr(),
                senv.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        return Err(Error::Sys {
            step: "exec the container entry stub".into(),
            errno: nix::errno::Errno::last(),
        });
    }
    let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(Error::Sys {
        step: format!("exec {}", exe.display()),
        errno: e,
    })
}

fn exec_process(a: &InitArgs, chan: &mut Channel) -> Result<std::convert::Infallible> {
    if !a.plan.has(LinuxNamespaceType::Mount) {
        // Joining a mount namespace sets the root; without one, enter the rootfs as the
        // container's init did.
        mounts::chroot_into(a.rootfs)?;
    }
    let (env, exe) = prepare_process(a, chan)?;
    let report = Some(chan.fds()[1]);
    // The channel is close-on-exec: the parent sees EOF on success, an Error message otherwise.
    finish_and_exec(a, &env, &exe, report)
}
