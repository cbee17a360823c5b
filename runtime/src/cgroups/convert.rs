//! OCI resource values → cgroup file values, shared by both versions.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// cpu.shares (v1, 2..262144) → cpu.weight (v2, 1..10000), the conversion runc,
/// crun and the kubelet agree on.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio.weight (10..1000) → io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    let w = u64::from(w.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// cpu.max contents from OCI quota/period (quota <= 0 or absent means unlimited).
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    if quota.is_none() && period.is_none() {
        return None;
    }
    let q = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    Some(format!("{q} {}", period.unwrap_or(100_000)))
}

/// v2 memory.swap.max from OCI limit and swap (OCI swap = memory + swap).
pub fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>, String> {
    match (limit, swap) {
        (_, None) => Ok(None),
        (_, Some(-1)) => Ok(Some("max".into())),
        (Some(l), Some(s)) if l > 0 => {
            if s < l {
                Err(format!(
                    "memory+swap limit {s} is below the memory limit {l}"
                ))
            } else {
                Ok(Some((s - l).to_string()))
            }
        }
        (_, Some(s)) => Err(format!("memory.swap {s} needs a memory limit")),
    }
}

pub fn limit_str(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// A device rule in v1 devices.allow/deny syntax: `c 1:3 rwm`.
pub fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let t = match d.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::P) => "p",
    };
    let n = |v: Option<i64>| {
        v.filter(|v| *v >= 0)
            .map_or("*".to_string(), |v| v.to_string())
    };
    let access = d
        .access()
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "rwm".into());
    format!("{t} {}:{} {access}", n(d.major()), n(d.minor()))
}

/// Devices every container may use (as runc and crun allow them by default):
/// null, zero, full, tty, random, urandom, ptmx and pty slaves, plus mknod of any.
pub fn default_allowed_devices() -> Vec<LinuxDeviceCgroup> {
    let mk = |t: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(t));
        d.set_major(major);
        d.set_minor(minor);
        d.set_access(Some(access.to_string()));
        d
    };
    use LinuxDeviceType::{B, C};
    vec![
        mk(C, None, None, "m"),
        mk(B, None, None, "m"),
        mk(C, Some(1), Some(3), "rwm"),
        mk(C, Some(1), Some(5), "rwm"),
        mk(C, Some(1), Some(7), "rwm"),
        mk(C, Some(5), Some(0), "rwm"),
        mk(C, Some(1), Some(8), "rwm"),
        mk(C, Some(1), Some(9), "rwm"),
        mk(C, Some(5), Some(2), "rwm"),
        mk(C, Some(136), None, "rwm"),
    ]
}

/// The full ordered device rule list: the config's rules, then the defaults
/// (later rules win, so the defaults stay usable even after a deny-all).
pub fn device_rules(cfg: Option<&Vec<LinuxDeviceCgroup>>) -> Vec<LinuxDeviceCgroup> {
    let mut rules: Vec<LinuxDeviceCgroup> = cfg.cloned().unwrap_or_default();
    rules.extend(default_allowed_devices());
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1, "below the v1 minimum clamps to 2");
        assert_eq!(shares_to_weight(0), 0, "unset stays unset");
    }

    #[test]
    fn blkio() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 1 + (490 * 9999) / 990);
    }

    #[test]
    fn cpu_and_swap() {
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).unwrap(),
            "50000 100000"
        );
        assert_eq!(cpu_max(Some(-1), None).unwrap(), "max 100000");
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(swap_max(Some(100), Some(300)).unwrap().unwrap(), "200");
        assert_eq!(swap_max(Some(100), Some(-1)).unwrap().unwrap(), "max");
        assert!(swap_max(Some(300), Some(100)).is_err());
        assert!(swap_max(None, Some(100)).is_err());
    }

    #[test]
    fn device_rules_text() {
        let r = default_allowed_devices();
        assert_eq!(device_rule(&r[0]), "c *:* m");
        assert_eq!(device_rule(&r[2]), "c 1:3 rwm");
        assert_eq!(device_rule(&r[9]), "c 136:* rwm");
        let mut all = LinuxDeviceCgroup::default();
        all.set_allow(false);
        assert_eq!(device_rule(&all), "a *:* rwm");
    }
}
