//! A CRI ContainerConfig (plus its pod and image) turned into an OCI config.json.
//! Secure by default: the OCI default capabilities, Skiff's default seccomp profile
//! unless Unconfined is asked, masked and read-only /proc paths; privileged undoes them.

use super::records::PodRecord;
use crate::error::{Error, Result};
use crate::image::ImageConfig;
use crate::sandbox::Sandbox;
use k8s_cri::v1;
use serde_json::{json, Value};
use std::path::Path;

const NS_POD: i32 = v1::NamespaceMode::Pod as i32;
const NS_NODE: i32 = v1::NamespaceMode::Node as i32;

pub struct Input<'a> {
    pub id: &'a str,
    pub pod: &'a PodRecord,
    pub sandbox: &'a Sandbox,
    pub config: &'a v1::ContainerConfig,
    pub image: &'a ImageConfig,
    /// The container's root filesystem (already mounted).
    pub rootfs: &'a Path,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidConfig(msg.into())
}

/// Look `name` up in the rootfs's /etc/passwd or /etc/group: (id, primary gid).
fn lookup(rootfs: &Path, file: &str, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| {
            let id = f[2].parse().ok()?;
            let gid = f[3].parse().unwrap_or(id);
            Some((id, gid))
        })?
    })
}

/// The groups of the image's /etc/group that list `uid`'s user name as a member (what
/// containerd adds as supplementary groups).
pub fn member_groups(rootfs: &Path, uid: u32) -> Vec<u32> {
    let read = |f: &str| std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
    let passwd = read("etc/passwd");
    let Some(name) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    }) else {
        return Vec::new();
    };
    read("etc/group")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m.trim() == name))
                .then(|| f[2].parse().ok())?
        })
        .collect()
}

/// Resolve a user spec ("uid", "name", "uid:gid", "name:group") inside the image.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            // A numeric uid takes its primary group from passwd when listed there.
            std::fs::read_to_string(rootfs.join("etc/passwd"))
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 4 && f[2] == u).then(|| f[3].parse().ok())?
                    })
                })
                .unwrap_or(0),
        ),
        Err(_) => lookup(rootfs, "etc/passwd", u)
            .ok_or_else(|| invalid(format!("user {u:?} is not in the image's /etc/passwd")))?,
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup(rootfs, "etc/group", g)
                    .ok_or_else(|| {
                        invalid(format!("group {g:?} is not in the image's /etc/group"))
                    })?
                    .0
            }
        };
    }
    Ok((uid, gid))
}

fn cap_name(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

fn capabilities(sc: Option<&v1::LinuxContainerSecurityContext>) -> Vec<String> {
    let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let Some(sc) = sc else {
        return crate::features::DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .collect();
    };
    if sc.privileged {
        return all;
    }
    let mut set: Vec<String> = crate::features::DEFAULT_CAPS
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(c) = &sc.capabilities {
        for a in &c.add_capabilities {
            if a.eq_ignore_ascii_case("ALL") {
                set = all.clone();
            } else if !set.contains(&cap_name(a)) {
                set.push(cap_name(a));
            }
        }
        for d in &c.drop_capabilities {
            if d.eq_ignore_ascii_case("ALL") {
                set.clear();
            } else {
                let d = cap_name(d);
                set.retain(|c| *c != d);
            }
        }
        // Capabilities added after an ALL drop survive it, as in Kubernetes.
        if c.drop_capabilities
            .iter()
            .any(|d| d.eq_ignore_ascii_case("ALL"))
        {
            for a in &c.add_capabilities {
                if !a.eq_ignore_ascii_case("ALL") && !set.contains(&cap_name(a)) {
                    set.push(cap_name(a));
                }
            }
        }
    }
    set.sort();
    set
}

fn device_rule(path: &Path, access: &str) -> Result<(Value, Value)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md =
        std::fs::metadata(path).map_err(|e| invalid(format!("device {}: {e}", path.display())))?;
    let typ = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return Err(invalid(format!("{} is not a device", path.display())));
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
    Ok((
        json!({"type": typ, "major": major, "minor": minor, "fileMode": md.mode() & 0o777, "uid": 0, "gid": 0}),
        json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": access}),
    ))
}

/// OCI resources from the CRI's LinuxContainerResources (zero means "not set").
pub fn resources(r: &v1::LinuxContainerResources) -> Value {
    let mut out = json!({});
    let mut cpu = json!({});
    if r.cpu_shares > 0 {
        cpu["shares"] = json!(r.cpu_shares);
    }
    if r.cpu_quota > 0 {
        cpu["quota"] = json!(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu["period"] = json!(r.cpu_period);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu["cpus"] = json!(r.cpuset_cpus);
    }
    if !r.cpuset_mems.is_empty() {
        cpu["mems"] = json!(r.cpuset_mems);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        out["cpu"] = cpu;
    }
    let mut mem = json!({});
    if r.memory_limit_in_bytes > 0 {
        mem["limit"] = json!(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        mem["swap"] = json!(r.memory_swap_limit_in_bytes);
    }
    if mem.as_object().is_some_and(|o| !o.is_empty()) {
        out["memory"] = mem;
    }
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

/// Build the config.json for a container of `pod`.
pub fn build(i: &Input) -> Result<Value> {
    let c = i.config;
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.as_ref();
    let privileged = sc.is_some_and(|s| s.privileged);
    let mut spec = crate::features::default_spec(false);
    spec.as_object_mut().expect("object").remove("hostname");
    spec["root"] = json!({"path": i.rootfs, "readonly": sc.is_some_and(|s| s.readonly_rootfs)});

    // Process: the image's entrypoint/cmd/env/workdir under the CRI's overrides.
    let args = i.image.argv(&c.command, &c.args);
    if args.is_empty() {
        return Err(invalid(
            "no command: the image has no entrypoint or cmd and the container gives none",
        ));
    }
    let mut env: Vec<String> = i.image.env();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    set(format!("HOSTNAME={}", i.sandbox.hostname));
    for kv in &c.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let cwd = if c.working_dir.is_empty() {
        i.image.working_dir()
    } else {
        c.working_dir.clone()
    };
    let (mut uid, mut gid) = match i.image.config.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => resolve_user(i.rootfs, u)?,
        None => (0, 0),
    };
    if let Some(sc) = sc {
        if let Some(g) = &sc.run_as_group {
            if sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
                // containerd's check and words.
                return Err(invalid(format!(
                    "user group {:?} is specified without user",
                    g.value
                )));
            }
        }
        if !sc.run_as_username.is_empty() {
            (uid, gid) = resolve_user(i.rootfs, &sc.run_as_username)?;
        }
        if let Some(u) = &sc.run_as_user {
            (uid, gid) = resolve_user(i.rootfs, &u.value.to_string())?;
        }
        if let Some(g) = &sc.run_as_group {
            gid = g.value as u32;
        }
    }
    // The user's groups from the image's /etc/group, then the requested ones.
    let mut extra: Vec<u32> = member_groups(i.rootfs, uid);
    for g in sc.iter().flat_map(|s| s.supplemental_groups.iter()) {
        if !extra.contains(&(*g as u32)) {
            extra.push(*g as u32);
        }
    }
    let caps = capabilities(sc);
    let proc = &mut spec["process"];
    proc["terminal"] = json!(c.tty);
    proc["args"] = json!(args);
    proc["env"] = json!(env);
    proc["cwd"] = json!(if cwd.is_empty() { "/".into() } else { cwd });
    proc["user"] = json!({"uid": uid, "gid": gid, "additionalGids": extra});
    proc["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    proc["noNewPrivileges"] = json!(sc.is_some_and(|s| s.no_new_privs));
    // As many open files as the node allows us (raising a hard limit needs CAP_SYS_RESOURCE).
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(_, hard)| hard.min(1 << 20));
    proc["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]);
    if let Some(r) = &linux.resources {
        if r.oom_score_adj != 0 {
            proc["oomScoreAdj"] = json!(r.oom_score_adj);
        }
    }

    // Namespaces: the pod's net/ipc/uts (none of them for host-network pods), own pid and mount.
    let ns_opts = sc
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mut namespaces = vec![json!({"type": "mount"}), json!({"type": "cgroup"})];
    match ns_opts.pid {
        NS_NODE => {}
        // POD (the zero value) joins the pod's shared namespace if the pod has one;
        // a pod created without one gives each container its own.
        NS_POD if i.sandbox.pid_holder.is_some() => match i.sandbox.pid_ns_path() {
            Some(p) => namespaces.push(json!({"type": "pid", "path": p})),
            None => {
                return Err(Error::State {
                    id: i.pod.id.clone(),
                    status: "broken".into(),
                    what: "the pod's PID namespace holder is gone".into(),
                })
            }
        },
        _ => namespaces.push(json!({"type": "pid"})),
    }
    if !i.pod.host_network {
        namespaces.push(json!({"type": "network", "path": i.sandbox.ns_path("net")}));
        namespaces.push(json!({"type": "uts", "path": i.sandbox.ns_path("uts")}));
    }
    if ns_opts.ipc != NS_NODE {
        namespaces.push(json!({"type": "ipc", "path": i.sandbox.ns_path("ipc")}));
    }
    spec["linux"]["namespaces"] = json!(namespaces);

    // Mounts: the pod's files, then the CRI's binds, parents before children.
    let mut mounts: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    if privileged {
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                m["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
            }
        }
    }
    let mut binds: Vec<&v1::Mount> = c.mounts.iter().collect();
    binds.sort_by_key(|m| Path::new(&m.container_path).components().count());
    for (dest, src) in [
        ("/etc/hosts", i.sandbox.hosts_path()),
        ("/etc/resolv.conf", i.sandbox.resolv_path()),
        ("/etc/hostname", i.sandbox.hostname_path()),
    ] {
        if !binds.iter().any(|m| m.container_path == dest) {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", "rw"]}));
        }
    }
    for m in binds {
        if m.host_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(invalid(format!(
                "mount {:?} -> {:?}: host path and absolute container path are required",
                m.host_path, m.container_path
            )));
        }
        if !Path::new(&m.host_path).exists() {
            std::fs::create_dir_all(&m.host_path)
                .map_err(|e| invalid(format!("create mount source {}: {e}", m.host_path)))?;
        }
        let prop = match v1::MountPropagation::try_from(m.propagation) {
            Ok(v1::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(v1::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        let rw = if m.readonly { "ro" } else { "rw" };
        mounts.push(json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": ["rbind", prop, rw]}));
    }
    spec["mounts"] = json!(mounts);

    // Devices and resources.
    let mut devices = Vec::new();
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    if privileged {
        rules = vec![json!({"allow": true, "access": "rwm"})];
    }
    for d in &c.devices {
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        let (mut dev, rule) = device_rule(Path::new(&d.host_path), access)?;
        dev["path"] = json!(d.container_path);
        devices.push(dev);
        rules.push(rule);
    }
    let mut res = linux.resources.as_ref().map(resources).unwrap_or(json!({}));
    res["devices"] = json!(rules);
    spec["linux"]["resources"] = res;
    if !devices.is_empty() {
        spec["linux"]["devices"] = json!(devices);
    }
    spec["linux"]["cgroupsPath"] = json!(format!("{}/{}", i.sandbox.cgroup, i.id));
    let sysctls = i
        .pod
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    if !sysctls.is_empty() {
        spec["linux"]["sysctl"] = json!(sysctls);
    }

    // Confinement.
    if privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    } else if let Some(sc) = sc {
        if !sc.masked_paths.is_empty() {
            spec["linux"]["maskedPaths"] = json!(sc.masked_paths);
        }
        if !sc.readonly_paths.is_empty() {
            spec["linux"]["readonlyPaths"] = json!(sc.readonly_paths);
        }
    }
    if !privileged {
        if let Some(v) = seccomp_profile(sc, &caps)? {
            spec["linux"]["seccomp"] = v;
        }
    }
    let mut ann = json!({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": i.pod.id,
        "io.kubernetes.cri.container-name": c.metadata.as_ref().map_or("", |m| m.name.as_str()),
    });
    for (k, v) in &c.annotations {
        ann[k] = json!(v);
    }
    spec["annotations"] = ann;
    Ok(spec)
}

/// The seccomp profile a container asked for, as containerd reads it: the `seccomp`
/// field, else the older `seccomp_profile_path` ("runtime/default", "docker/default",
/// "unconfined", "localhost/PATH"); nothing named means unconfined (the CRI default; the
/// kubelet asks for RuntimeDefault explicitly).
fn seccomp_profile(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    caps: &[String],
) -> Result<Option<Value>> {
    use v1::security_profile::ProfileType;
    let localhost = |p: &str| -> Result<Option<Value>> {
        if !Path::new(p).is_absolute() {
            return Err(invalid(format!(
                "seccomp profile {p:?} must be an absolute path"
            )));
        }
        let text = std::fs::read(p).map_err(|e| invalid(format!("seccomp profile {p}: {e}")))?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| invalid(format!("seccomp profile {p}: {e}")))
    };
    let Some(sc) = sc else { return Ok(None) };
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(crate::seccomp::default_profile(caps))),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(invalid(format!(
                "unknown seccomp profile type {}",
                p.profile_type
            ))),
        };
    }
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(crate::seccomp::default_profile(caps))),
        p => match p.strip_prefix("localhost/") {
            Some(file) => localhost(file),
            None => Err(invalid(format!("seccomp profile path {p:?} is not one of runtime/default, docker/default, unconfined, localhost/PATH"))),
        },
    }
}
