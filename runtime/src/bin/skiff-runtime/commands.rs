//! Each CLI command, implemented on top of `skiff_runtime::Runtime`.

use crate::cli::{Cli, Command, CreateArgs, ExecArgs, UpdateArgs};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process};
use skiff_runtime::{console, CreateOptions, ExecOptions, Runtime, Status};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub fn run(cli: Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup: the systemd cgroup driver is not supported; use cgroupfs paths");
    }
    let rt = || Runtime::new(&cli.root).context("open state root");
    match cli.command {
        Command::Spec { bundle } => {
            let rootless = cli.rootless.as_deref().is_some_and(|v| v == "true");
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists: remove it first", path.display());
            }
            let text =
                serde_json::to_string_pretty(&skiff_runtime::features::default_spec(rootless))?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
        Command::Create { id, args } => {
            let (opts, _sock) = create_options(&args)?;
            rt()?.create(&id, &args.bundle, &opts)?;
        }
        Command::Start { id } => rt()?.start(&id)?,
        Command::State { id } => {
            let (st, status) = rt()?.state(&id)?;
            println!("{}", serde_json::to_string_pretty(&st.oci_json(status))?);
        }
        Command::Kill { id, signal, all } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            rt()?.kill(&id, sig, all)?;
        }
        Command::Delete { id, force } => {
            let r = rt()?;
            match r.delete(&id, force) {
                // runc exits 0 for a missing container with --force.
                Err(skiff_runtime::Error::NotFound(_)) if force => {}
                other => other?,
            }
        }
        Command::Run {
            id,
            args,
            detach,
            keep,
        } => return run_container(&rt()?, &id, &args, detach, keep),
        Command::Exec(e) => return exec(&rt()?, e),
        Command::List { format, quiet } => list(&rt()?, &format, quiet)?,
        Command::Ps {
            id,
            format,
            ps_args,
        } => ps(&rt()?, &id, &format, &ps_args)?,
        Command::Pause { id } => rt()?.pause(&id)?,
        Command::Resume { id } => rt()?.resume(&id)?,
        Command::Update(u) => update(&rt()?, u)?,
        Command::Events {
            id,
            stats,
            interval,
        } => events(&rt()?, &id, stats, &interval)?,
        Command::Features => println!(
            "{}",
            serde_json::to_string_pretty(&skiff_runtime::features::features())?
        ),
        Command::Serve(a) => serve(&cli.root, a)?,
        Command::PodPause => skiff_runtime::sandbox::pause_forever(),
        Command::Shim {
            id,
            bundle,
            log_path,
            exit_file,
            stdin,
            tty,
        } => {
            let args = skiff_runtime::cri::shim::ShimArgs {
                id,
                bundle,
                root: cli.root.clone(),
                log_path: log_path.unwrap_or_default(),
                exit_file,
                stdin,
                tty,
            };
            return Ok(shim(&args));
        }
    }
    Ok(0)
}

/// Options for create/run; the console socket must live as long as the create call.
fn create_options(a: &CreateArgs) -> Result<(CreateOptions, Option<UnixStream>)> {
    let sock = a
        .console_socket
        .as_deref()
        .map(console::connect)
        .transpose()?;
    let opts = CreateOptions {
        pid_file: a.pid_file.as_ref().map(|p| absolute(p)).transpose()?,
        console: sock.as_ref().map(|s| s.as_raw_fd()),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
    };
    Ok((opts, sock))
}

fn absolute(p: &Path) -> Result<std::path::PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("unknown signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow!("unknown signal {s:?}"))
}

/// For `run`/`exec -t` without a console socket: an internal socket pair whose master we proxy.
fn internal_console() -> Result<(UnixStream, UnixStream)> {
    UnixStream::pair().context("create console socket pair")
}

fn terminal_requested(bundle: &Path) -> bool {
    skiff_runtime::config_json::load(bundle)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

fn run_container(
    rt: &Runtime,
    id: &str,
    args: &CreateArgs,
    detach: bool,
    keep: bool,
) -> Result<i32> {
    let sigs = crate::wait::prepare();
    let (mut opts, _sock) = create_options(args)?;
    let mut internal = None;
    if opts.console.is_none() && terminal_requested(&args.bundle) {
        if detach {
            bail!("cannot allocate a tty for a detached container without --console-socket");
        }
        let (ours, theirs) = internal_console()?;
        opts.console = Some(theirs.as_raw_fd());
        internal = Some((ours, theirs));
    }
    let st = rt.create(id, &args.bundle, &opts)?;
    let master: Option<OwnedFd> = match &internal {
        Some((ours, _)) => Some(console::recv_master(ours)?),
        None => None,
    };
    if let Err(e) = rt.start(id) {
        let _ = rt.delete(id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let proxy = master.map(spawn_proxy);
    let code = crate::wait::wait_forwarding(&sigs, st.pid);
    finish_proxy(proxy);
    if !keep {
        rt.delete(id, true)?;
    }
    Ok(code)
}

fn exec(rt: &Runtime, e: ExecArgs) -> Result<i32> {
    if e.apparmor.as_deref().is_some_and(|s| !s.is_empty()) {
        bail!("--apparmor: AppArmor is not supported by skiff-runtime");
    }
    if e.process_label.as_deref().is_some_and(|s| !s.is_empty()) {
        bail!("--process-label: SELinux is not supported by skiff-runtime");
    }
    let (st, _) = rt.state(&e.id)?;
    let mut p: Process = match &e.process {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("invalid process JSON in {}", path.display()))?
        }
        None => {
            if e.command.is_empty() {
                bail!("exec needs a command or --process");
            }
            let mut p = st.config.process().clone().unwrap_or_default();
            p.set_args(Some(e.command.clone()));
            p.set_terminal(Some(e.tty));
            p.set_console_size(None);
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(e.env.iter().cloned());
            p.set_env(Some(env));
            if let Some(cwd) = &e.cwd {
                p.set_cwd(cwd.clone());
            }
            if let Some(u) = &e.user {
                let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                p.user_mut().set_uid(
                    uid.parse()
                        .with_context(|| format!("--user {u}: uid must be numeric"))?,
                );
                p.user_mut().set_gid(
                    gid.parse()
                        .with_context(|| format!("--user {u}: gid must be numeric"))?,
                );
            }
            if !e.additional_gids.is_empty() {
                p.user_mut()
                    .set_additional_gids(Some(e.additional_gids.clone()));
            }
            if e.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !e.cap.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                let extra: oci_spec::runtime::Capabilities =
                    serde_json::from_value(serde_json::json!(e
                        .cap
                        .iter()
                        .map(|c| if c.starts_with("CAP_") {
                            c.clone()
                        } else {
                            format!("CAP_{}", c.to_ascii_uppercase())
                        })
                        .collect::<Vec<_>>()))
                    .context("--cap: unknown capability")?;
                let add = |s: Option<oci_spec::runtime::Capabilities>| {
                    Some(s.unwrap_or_default().union(&extra).cloned().collect())
                };
                caps.set_bounding(add(caps.bounding().clone()));
                caps.set_effective(add(caps.effective().clone()));
                caps.set_permitted(add(caps.permitted().clone()));
                p.set_capabilities(Some(caps));
            }
            p
        }
    };
    if e.process.is_some() && e.tty {
        p.set_terminal(Some(true));
    }
    let sigs = if e.detach {
        None
    } else {
        Some(crate::wait::prepare())
    };
    let sock = e
        .console_socket
        .as_deref()
        .map(console::connect)
        .transpose()?;
    let mut internal = None;
    let mut console_fd = sock.as_ref().map(|s| s.as_raw_fd());
    if p.terminal() == Some(true) && console_fd.is_none() {
        if e.detach {
            bail!("cannot allocate a tty for a detached process without --console-socket");
        }
        let (ours, theirs) = internal_console()?;
        console_fd = Some(theirs.as_raw_fd());
        internal = Some((ours, theirs));
    }
    let opts = ExecOptions {
        pid_file: e.pid_file.as_ref().map(|p| absolute(p)).transpose()?,
        console: console_fd,
        preserve_fds: e.preserve_fds,
        ignore_paused: e.ignore_paused,
    };
    let pid = rt.exec(&e.id, &p, &opts)?;
    let Some(sigs) = sigs else { return Ok(0) };
    let proxy = match &internal {
        Some((ours, _)) => Some(spawn_proxy(console::recv_master(ours)?)),
        None => None,
    };
    let code = crate::wait::wait_forwarding(&sigs, pid);
    finish_proxy(proxy);
    Ok(code)
}

/// Copy between our stdio and a pty master on a thread; the receiver fires when it ends.
fn spawn_proxy(master: OwnedFd) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        console::proxy(master);
        let _ = tx.send(());
    });
    rx
}

/// After the process exited, let the proxy drain what is left in the pty. It ends at the
/// pty's hangup; a background process still holding the terminal bounds the wait.
fn finish_proxy(proxy: Option<std::sync::mpsc::Receiver<()>>) {
    if let Some(rx) = proxy {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
}

fn list(rt: &Runtime, format: &str, quiet: bool) -> Result<()> {
    let all = rt.list()?;
    if quiet {
        for (st, _) in &all {
            println!("{}", st.id);
        }
        return Ok(());
    }
    if format == "json" {
        let v: Vec<_> = all.iter().map(|(st, s)| st.oci_json(*s)).collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let mut rows = vec![[
        "ID".to_string(),
        "PID".into(),
        "STATUS".into(),
        "BUNDLE".into(),
        "CREATED".into(),
        "OWNER".into(),
    ]];
    for (st, s) in &all {
        let pid = if *s == Status::Stopped { 0 } else { st.pid };
        let owner = if st.owner.is_empty() {
            "root".to_string()
        } else {
            st.owner.clone()
        };
        rows.push([
            st.id.clone(),
            pid.to_string(),
            s.to_string(),
            st.bundle.display().to_string(),
            st.created.clone(),
            owner,
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn ps(rt: &Runtime, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let pids = rt.pids(id)?;
    if format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for l in lines {
        if let Some(p) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&p) {
                println!("{l}");
            }
        }
    }
    Ok(())
}

/// Sizes as runc's update accepts them: plain bytes or with k/m/g/t suffixes; -1 = unlimited.
fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let num_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (n, unit) = lower.split_at(num_end);
    let n: f64 = n.parse().map_err(|_| anyhow!("invalid size {s:?}"))?;
    let mult = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => bail!("invalid size unit in {s:?}"),
    };
    Ok((n * mult) as i64)
}

fn update(rt: &Runtime, u: UpdateArgs) -> Result<()> {
    let mut v: serde_json::Value = match &u.resources {
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("invalid resources JSON in {}", p.display()))?
        }
        None => serde_json::json!({}),
    };
    let set = |v: &mut serde_json::Value, path: &[&str], val: serde_json::Value| {
        let mut cur = v;
        for k in &path[..path.len() - 1] {
            cur = cur
                .as_object_mut()
                .unwrap()
                .entry(k.to_string())
                .or_insert(serde_json::json!({}));
        }
        cur[path[path.len() - 1]] = val;
    };
    if let Some(m) = &u.memory {
        set(&mut v, &["memory", "limit"], parse_bytes(m)?.into());
    }
    if let Some(m) = &u.memory_reservation {
        set(&mut v, &["memory", "reservation"], parse_bytes(m)?.into());
    }
    if let Some(m) = &u.memory_swap {
        set(&mut v, &["memory", "swap"], parse_bytes(m)?.into());
    }
    if let Some(x) = u.cpu_shares {
        set(&mut v, &["cpu", "shares"], x.into());
    }
    if let Some(x) = u.cpu_quota {
        set(&mut v, &["cpu", "quota"], x.into());
    }
    if let Some(x) = u.cpu_period {
        set(&mut v, &["cpu", "period"], x.into());
    }
    if let Some(x) = &u.cpuset_cpus {
        set(&mut v, &["cpu", "cpus"], x.clone().into());
    }
    if let Some(x) = &u.cpuset_mems {
        set(&mut v, &["cpu", "mems"], x.clone().into());
    }
    if let Some(x) = u.pids_limit {
        set(&mut v, &["pids", "limit"], x.into());
    }
    if let Some(x) = u.blkio_weight {
        set(&mut v, &["blockIO", "weight"], x.into());
    }
    let res: LinuxResources = serde_json::from_value(v).context("invalid resources")?;
    rt.update(&u.id, &res)?;
    Ok(())
}

fn parse_interval(s: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|e| anyhow!("--interval {s:?}: {e}"))
}

fn events(rt: &Runtime, id: &str, once: bool, interval: &str) -> Result<()> {
    let stats_event = |rt: &Runtime| -> Result<serde_json::Value> {
        let s = rt.stats(id)?;
        Ok(serde_json::json!({"type": "stats", "id": id, "data": s}))
    };
    if once {
        println!("{}", stats_event(rt)?);
        return Ok(());
    }
    let every = parse_interval(interval)?;
    let mut ooms = rt.stats(id)?.memory.oom_kill;
    loop {
        let (_, status) = rt.state(id)?;
        if status == Status::Stopped {
            return Ok(());
        }
        let ev = stats_event(rt)?;
        let now = ev["data"]["memory"]["oomKill"].as_u64().unwrap_or(0);
        if now > ooms {
            println!("{}", serde_json::json!({"type": "oom", "id": id}));
            ooms = now;
        }
        println!("{ev}");
        std::thread::sleep(every);
    }
}

fn serve(root: &Path, a: crate::cli::ServeArgs) -> Result<()> {
    let cfg = skiff_runtime::cri::Config {
        root: root.to_path_buf(),
        image_dir: a.image_dir,
        listen: a.listen,
        cni_conf_dir: a.cni_conf_dir,
        cni_bin_dir: a.cni_bin_dir,
        // This process runs from its protected copy (exeseal): monitors and execs
        // started through the link run from it too, and need no copy of their own.
        shim_binary: "/proc/self/exe".into(),
        insecure_registries: a.insecure_registry,
        registry_mirrors: a.registry_mirror,
        streaming_addr: a.streaming_address,
    };
    // Logs: what the server does to sandboxes, containers and images (RUST_LOG to
    // change the level; SKIFF_LOG_FORMAT=json for JSON lines).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,skiff_runtime=info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var("SKIFF_LOG_FORMAT").is_ok_and(|f| f == "json") {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
    tracing::info!(listen = %cfg.listen.display(), "serving CRI v1");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(skiff_runtime::cri::serve(cfg))
        .map_err(|e| anyhow!("serve: {e}"))
}

/// Detach the monitor from the server: fork, the first process exits at once (the server
/// reaps it), the second carries on and is re-parented to init.
fn shim(args: &skiff_runtime::cri::shim::ShimArgs) -> i32 {
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => 0,
        Ok(nix::unistd::ForkResult::Child) => {
            let pid_file = args.exit_file.with_file_name("shim.pid");
            let _ = std::fs::write(pid_file, std::process::id().to_string());
            skiff_runtime::cri::shim::run(args)
        }
        Err(e) => {
            eprintln!("skiff-runtime shim: fork: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("12q").is_err());
    }
}
