//! Loading and validating an OCI bundle's config.json.
//!
//! The runtime-spec says unknown properties must be ignored, so only fields the
//! spec defines but this runtime does not implement are refused, by name.

use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Oldest and newest runtime-spec versions accepted in `ociVersion`.
pub const OCI_VERSION_MIN: &str = "1.0.0";
pub const OCI_VERSION_MAX: &str = "1.3.0";
/// Version written into state output.
pub const OCI_VERSION: &str = "1.2.0";

/// Spec fields (JSON pointers) that this runtime refuses when set to a non-empty value.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("/linux/intelRdt", "Intel RDT is not supported"),
    (
        "/linux/netDevices",
        "moving network devices is not supported",
    ),
    (
        "/linux/timeOffsets",
        "time namespace offsets are not supported",
    ),
    (
        "/linux/mountLabel",
        "SELinux mount labels are not supported (no SELinux)",
    ),
    ("/linux/resources/rdma", "the rdma cgroup is not supported"),
    (
        "/linux/resources/network",
        "net_cls/net_prio cgroups are not supported",
    ),
    (
        "/process/apparmorProfile",
        "AppArmor profiles are not supported (AppArmor is not enabled by this runtime)",
    ),
    (
        "/process/selinuxLabel",
        "SELinux labels are not supported (no SELinux)",
    ),
    ("/process/scheduler", "process.scheduler is not supported"),
    (
        "/process/execCPUAffinity",
        "process.execCPUAffinity is not supported",
    ),
    ("/solaris", "Solaris containers are not supported"),
    ("/windows", "Windows containers are not supported"),
    ("/vm", "VM-based containers are not supported"),
    ("/zos", "z/OS containers are not supported"),
];

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Check `ociVersion` is 1.0.x ..= 1.3.x (pre-release suffixes allowed).
pub fn check_version(v: &str) -> Result<()> {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let ok = parts.len() == 3
        && parts[0] == "1"
        && matches!(parts[1], "0" | "1" | "2" | "3")
        && parts[2].parse::<u32>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "ociVersion {v:?} is not supported (accepted: {OCI_VERSION_MIN} to {}.x)",
            &OCI_VERSION_MAX[..3]
        )))
    }
}

/// Deprecated fields runc accepts and ignores with a warning (kernel memory accounting
/// cannot be limited separately since Linux 5.4 / cgroup v2).
const IGNORED: &[(&str, &str)] = &[
    (
        "/linux/resources/memory/kernel",
        "linux.resources.memory.kernel is deprecated and ignored (kernel memory limits are gone since Linux 5.4)",
    ),
    (
        "/linux/resources/memory/kernelTCP",
        "linux.resources.memory.kernelTCP is deprecated and ignored",
    ),
];

/// Warnings for deprecated fields that are set and ignored.
pub fn ignored_fields(raw: &Value) -> Vec<&'static str> {
    IGNORED
        .iter()
        .filter(|(ptr, _)| raw.pointer(ptr).is_some_and(|v| !v.is_null()))
        .map(|(_, why)| *why)
        .collect()
}

/// Refuse spec fields that are set but not implemented, naming them.
pub fn check_unsupported(raw: &Value) -> Result<()> {
    for (ptr, why) in UNSUPPORTED {
        if let Some(v) = raw.pointer(ptr) {
            if !is_empty(v) {
                let name = ptr.trim_start_matches('/').replace('/', ".");
                return Err(Error::Unsupported(format!("{name}: {why}")));
            }
        }
    }
    if let Some(mounts) = raw.get("mounts").and_then(Value::as_array) {
        for m in mounts {
            for key in ["uidMappings", "gidMappings"] {
                if m.get(key).is_some_and(|v| !is_empty(v)) {
                    let dest = m.get("destination").and_then(Value::as_str).unwrap_or("?");
                    return Err(Error::Unsupported(format!(
                        "mounts[{dest}].{key}: id-mapped mounts are not supported"
                    )));
                }
            }
        }
    }
    if let Some(flags) = raw
        .pointer("/linux/seccomp/flags")
        .and_then(Value::as_array)
    {
        for f in flags {
            let f = f.as_str().unwrap_or("");
            if f != "SECCOMP_FILTER_FLAG_LOG" && f != "SECCOMP_FILTER_FLAG_SPEC_ALLOW" {
                return Err(Error::Unsupported(format!("linux.seccomp.flags: {f}")));
            }
        }
    }
    Ok(())
}

/// Parse and validate a config document. `bundle` is used to resolve a relative root.path.
pub fn parse(text: &str) -> Result<Spec> {
    let raw: Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidConfig(format!("config.json is not valid JSON: {e}")))?;
    if !raw.is_object() {
        return Err(Error::InvalidConfig(
            "config.json must hold a JSON object".into(),
        ));
    }
    let version = raw
        .get("ociVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidConfig("ociVersion is missing".into()))?;
    check_version(version)?;
    check_unsupported(&raw)?;
    for w in ignored_fields(&raw) {
        crate::log::warn(w);
    }
    let spec: Spec = serde_json::from_value(raw)
        .map_err(|e| Error::InvalidConfig(format!("config.json: {e}")))?;
    validate(&spec)?;
    Ok(spec)
}

/// Load `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        step: format!("read {}", path.display()),
        err: e,
    })?;
    parse(&text)
}

/// The rootfs path, resolved against the bundle when relative.
pub fn rootfs(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("root is missing".into()))?;
    let p = root.path();
    let full = if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    };
    std::fs::canonicalize(&full)
        .map_err(|e| Error::InvalidConfig(format!("root.path {}: {e}", full.display())))
}

fn validate(spec: &Spec) -> Result<()> {
    let inv = |m: String| Err(Error::InvalidConfig(m));
    match spec.root() {
        None => return inv("root is missing".into()),
        Some(r) if r.path().as_os_str().is_empty() => return inv("root.path is empty".into()),
        _ => {}
    }
    if let Some(p) = spec.process() {
        if !p.cwd().is_absolute() {
            return inv(format!(
                "process.cwd {:?} must be an absolute path",
                p.cwd()
            ));
        }
        if let Some(env) = p.env() {
            for e in env {
                if !e.contains('=') {
                    return inv(format!("process.env entry {e:?} is not KEY=VALUE"));
                }
            }
        }
        if let Some(rl) = p.rlimits() {
            for r in rl {
                if r.soft() > r.hard() {
                    return inv(format!(
                        "process.rlimits {:?}: soft limit above hard limit",
                        r.typ()
                    ));
                }
            }
        }
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return inv(format!(
                "mount destination {:?} must be absolute",
                m.destination()
            ));
        }
    }
    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        let mut new_user = false;
        for ns in linux.namespaces().iter().flatten() {
            if !seen.insert(ns.typ()) {
                return inv(format!("namespace {:?} listed twice", ns.typ()));
            }
            if ns.typ() == LinuxNamespaceType::User && ns.path().is_none() {
                new_user = true;
            }
        }
        let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if new_user && !has_maps {
            return inv(
                "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
            );
        }
        if !new_user && (linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())) {
            return inv("linux.uidMappings given without a new user namespace".into());
        }
        if !seen.contains(&LinuxNamespaceType::Mount) {
            let restricted = linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty())
                || linux
                    .readonly_paths()
                    .as_ref()
                    .is_some_and(|p| !p.is_empty());
            if restricted {
                // runc's words.
                return inv(
                    "unable to restrict sys entries without a private MNT namespace".into(),
                );
            }
            if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
                return inv(
                    "root.readonly needs a private mount namespace (it would remount the caller's root)"
                        .into(),
                );
            }
        }
        if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
            && !seen.contains(&LinuxNamespaceType::Uts)
        {
            // runc's words.
            return inv("unable to set hostname without a private UTS namespace".into());
        }
        if let Some(prop) = linux.rootfs_propagation() {
            if !prop.is_empty() && crate::mounts::propagation_flag(prop).is_none() {
                return inv(format!(
                    "linux.rootfsPropagation {prop:?} is not a propagation mode"
                ));
            }
        }
        if let Some(mp) = linux.memory_policy() {
            crate::mempolicy::plan(mp)?;
        }
        for d in linux.devices().iter().flatten() {
            if !d.path().is_absolute() {
                return inv(format!("device path {:?} must be absolute", d.path()));
            }
        }
    } else {
        return inv("linux is missing".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["0.9.0", "1.4.0", "2.0.0", "1.2", "x"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsupported_named() {
        let raw = serde_json::json!({"ociVersion":"1.2.0","linux":{"intelRdt":{"closID":"x"}}});
        let e = check_unsupported(&raw).unwrap_err().to_string();
        assert!(e.contains("linux.intelRdt"), "{e}");
        let raw = serde_json::json!({"process":{"apparmorProfile":""}});
        assert!(
            check_unsupported(&raw).is_ok(),
            "empty value is not a request"
        );
    }

    #[test]
    fn invalid_json_and_missing_fields() {
        assert!(parse("{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert!(parse(r#"{"ociVersion":"1.0.0"}"#)
            .unwrap_err()
            .to_string()
            .contains("root"));
        let e = parse(r#"{"ociVersion":"1.0.0","root":{"path":"r"},"linux":{"namespaces":[{"type":"user"}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("uidMappings"), "{e}");
    }
}
