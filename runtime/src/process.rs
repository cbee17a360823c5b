//! The container process's identity and limits: user and groups, capabilities,
//! rlimits, environment and the executable lookup.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimit, PosixRlimitType, Process};
use std::ffi::CString;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capability set as a bit mask (caps unknown to this kernel are dropped, as runc does).
pub fn cap_mask(set: Option<&Capabilities>) -> u64 {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(40);
    let mut m = 0u64;
    for c in set.into_iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Ok(cap) = name.parse::<caps::Capability>() {
            if cap.index() <= last {
                m |= cap.bitmask();
            }
        }
    }
    m
}

/// Resolved capability masks for the five sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapMasks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapMasks {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> CapMasks {
        match c {
            None => CapMasks::default(),
            Some(c) => CapMasks {
                bounding: cap_mask(c.bounding().as_ref()),
                effective: cap_mask(c.effective().as_ref()),
                permitted: cap_mask(c.permitted().as_ref()),
                inheritable: cap_mask(c.inheritable().as_ref()),
                ambient: cap_mask(c.ambient().as_ref()),
            },
        }
    }

    /// Keep only what `held` (the runtime's own bounding set) allows: a privileged
    /// container or "all capabilities" gets what the runtime has, not EPERM. Returns the
    /// capabilities dropped.
    pub fn limit_to(&mut self, held: u64) -> u64 {
        let asked =
            self.bounding | self.effective | self.permitted | self.inheritable | self.ambient;
        for set in [
            &mut self.bounding,
            &mut self.effective,
            &mut self.permitted,
            &mut self.inheritable,
            &mut self.ambient,
        ] {
            *set &= held;
        }
        asked & !held
    }

    /// Ambient capabilities must also be permitted and inheritable, or raising them fails
    /// (EPERM). `runc spec` lists ambient ones without inheritable: like runc, skip them
    /// with a warning. Returns the capabilities skipped.
    pub fn drop_unraisable_ambient(&mut self) -> u64 {
        let bad = self.ambient & !(self.permitted & self.inheritable);
        self.ambient &= !bad;
        bad
    }
}

/// The masks the process gets, and a warning for what was left out; the same in the
/// runtime (which logs the warnings before fork) and in the child (which applies them).
pub fn resolve_caps(c: Option<&LinuxCapabilities>) -> (CapMasks, Vec<String>) {
    let mut caps = CapMasks::from_spec(c);
    let mut warnings = Vec::new();
    let missing = caps.limit_to(own_bounding());
    if missing != 0 {
        warnings.push(format!(
            "capabilities the runtime does not hold are left out: {}",
            cap_names(missing)
        ));
    }
    let skipped = caps.drop_unraisable_ambient();
    if skipped != 0 {
        warnings.push(format!(
            "ambient capabilities not also inheritable and permitted are skipped: {}",
            cap_names(skipped)
        ));
    }
    (caps, warnings)
}

/// The calling process's bounding set.
pub fn own_bounding() -> u64 {
    caps::read(None, caps::CapSet::Bounding)
        .map(|set| set.iter().fold(0, |m, c| m | c.bitmask()))
        .unwrap_or(u64::MAX)
}

/// Names of the capabilities in `mask`, for messages.
pub fn cap_names(mask: u64) -> String {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drop from the bounding set every capability not in `keep`.
pub fn drop_bounding(keep: u64) -> Result<()> {
    for cap in caps::all() {
        if keep & cap.bitmask() == 0
            && caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false)
        {
            nix::errno::Errno::result(unsafe {
                libc::prctl(libc::PR_CAPBSET_DROP, cap.index() as libc::c_ulong, 0, 0, 0)
            })
            .step(|| format!("drop {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

/// Set effective, permitted and inheritable in one capset(2) so no ordering can fail.
pub fn set_caps(m: &CapMasks) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(m.effective);
    let (p0, p1) = split(m.permitted);
    let (i0, i1) = split(m.inheritable);
    let data = [
        Data {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        Data {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    nix::errno::Errno::result(unsafe {
        libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr())
    })
    .step(|| "set capabilities (capset)")?;
    for cap in caps::all() {
        if m.ambient & cap.bitmask() != 0 {
            nix::errno::Errno::result(unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap.index() as libc::c_ulong,
                    0,
                    0,
                )
            })
            .step(|| format!("raise ambient {cap}"))?;
        }
    }
    Ok(())
}

/// Switch to the process user, keeping permitted capabilities across the uid change.
pub fn set_user(uid: u32, gid: u32, additional: &[u32], in_new_userns: bool) -> Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    nix::errno::Errno::result(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
        .step(|| "set keep-caps")?;
    let groups: Vec<Gid> = additional.iter().map(|g| Gid::from_raw(*g)).collect();
    match setgroups(&groups) {
        Ok(()) => {}
        // setgroups is disabled in user namespaces whose gid_map was written with setgroups=deny.
        Err(nix::errno::Errno::EPERM) if in_new_userns && groups.is_empty() => {}
        Err(e) => return Err(e).step(|| format!("setgroups {additional:?}")),
    }
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).step(|| format!("setgid {gid}"))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).step(|| format!("setuid {uid}"))?;
    nix::errno::Errno::result(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) })
        .step(|| "clear keep-caps")?;
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

pub fn set_rlimits(list: &[PosixRlimit]) -> Result<()> {
    for r in list {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        let res =
            nix::errno::Errno::result(unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) });
        res.map_err(|e| {
            let extra = if e == nix::errno::Errno::EPERM {
                " (raising a hard limit needs CAP_SYS_RESOURCE)"
            } else {
                ""
            };
            Error::Sys {
                step: format!(
                    "set rlimit {:?} to soft {} hard {}{extra}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                ),
                errno: e,
            }
        })?;
    }
    Ok(())
}

pub fn set_oom_score_adj(v: i32) -> Result<()> {
    std::fs::write("/proc/self/oom_score_adj", v.to_string()).map_err(|e| {
        let hint = if v < 0 && e.raw_os_error() == Some(libc::EACCES) {
            " (a negative value needs CAP_SYS_RESOURCE, which this runtime lacks)"
        } else {
            ""
        };
        Error::Io {
            step: format!("set oomScoreAdj {v}{hint}"),
            err: e,
        }
    })
}

/// Environment for the process: the config's (a name given twice keeps its last value,
/// at its first place, as runc does; so `exec --env` overrides the spec), plus PATH and
/// HOME when missing.
pub fn environment(p: &Process, home: impl FnOnce() -> String) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for e in p.env().iter().flatten() {
        let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string();
        match at.get(&name) {
            Some(&i) => env[i] = e.clone(),
            None => {
                at.insert(name, env.len());
                env.push(e.clone());
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home()));
    }
    env
}

/// Home directory of `uid` from the container's /etc/passwd, "/" when unknown.
pub fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".into())
}

/// Find the executable as execvp would, with PATH from the container's environment.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if arg0.is_empty() {
        return Err(Error::InvalidConfig(
            "process.args must not be empty".into(),
        ));
    }
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return if p.exists() {
            Ok(p)
        } else {
            Err(Error::Init(format!(
                "exec: {arg0:?}: no such file or directory"
            )))
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let cand = Path::new(if dir.is_empty() { "." } else { dir }).join(arg0);
        if is_exec(&cand) {
            return Ok(cand);
        }
    }
    Err(Error::Init(format!(
        "exec: {arg0:?}: executable file not found in $PATH"
    )))
}

pub fn cstrings(v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::InvalidConfig(format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_mask() {
        let set: Capabilities =
            serde_json::from_str(r#"["CAP_CHOWN","CAP_KILL","CAP_NET_BIND_SERVICE"]"#).unwrap();
        let m = cap_mask(Some(&set));
        assert_eq!(m, (1 << 0) | (1 << 5) | (1 << 10));
    }

    #[test]
    fn env_defaults() {
        let p: Process =
            serde_json::from_str(r#"{"cwd":"/","user":{"uid":0,"gid":0},"env":["A=1"]}"#).unwrap();
        let env = environment(&p, || "/root".into());
        assert_eq!(
            env,
            vec![
                "A=1".to_string(),
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/root".into()
            ]
        );
    }

    #[test]
    fn env_last_value_wins() {
        let p: Process = serde_json::from_str(
            r#"{"cwd":"/","user":{"uid":0,"gid":0},"env":["A=1","B=2","A=3","PATH=/x"]}"#,
        )
        .unwrap();
        let env = environment(&p, || "/".into());
        assert_eq!(env, ["A=3", "B=2", "PATH=/x", "HOME=/"]);
    }

    #[test]
    fn caps_limited_and_ambient_checked() {
        let all = u64::MAX >> 23; // caps 0..=40
        let mut m = CapMasks {
            bounding: all,
            effective: all,
            permitted: all,
            inheritable: 0,
            ambient: 1 << 10,
        };
        let dropped = m.limit_to(all & !(1 << 24));
        assert_eq!(dropped, 1 << 24);
        assert_eq!(m.permitted & (1 << 24), 0);
        assert_eq!(cap_names(dropped), "CAP_SYS_RESOURCE");
        assert_eq!(m.drop_unraisable_ambient(), 1 << 10);
        assert_eq!(m.ambient, 0);
    }

    #[test]
    fn lookup() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(find_executable("sh", &env).unwrap().ends_with("sh"));
        let e = find_executable("no-such-binary-here", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("executable file not found"), "{e}");
    }
}
