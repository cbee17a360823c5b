//! A Pod's spec turned into CRI requests: the sandbox config and each container's config.

use super::sources::Sources;
use crate::labels;
use crate::Config;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use skiff_apimachinery::quantity::parse_quantity;
use skiff_cri::v1;
use std::collections::HashMap;

/// Why a container's config could not be built (the pod shows CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("env {0}: {1} is not supported yet")]
    UnsupportedEnv(String, &'static str),
    #[error("{0} \"{1}\" not found")]
    Missing(&'static str, String),
    #[error("couldn't find key {0} in {1} {2}")]
    MissingKey(String, &'static str, String),
    #[error("{0}")]
    Volume(#[from] super::volumes::VolumeError),
    #[error("env {0}: field path {1:?} is not supported")]
    FieldPath(String, String),
    #[error("resources: cannot parse {0} {1:?}")]
    Quantity(&'static str, String),
}

pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// `<log dir>/<namespace>_<name>_<uid>`, as the kubelet lays pod logs out.
pub fn log_directory(cfg: &Config, pod: &Pod) -> String {
    cfg.pod_log_dir
        .join(format!("{}_{}_{}", namespace(pod), name(pod), pod_uid(pod)))
        .display()
        .to_string()
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(labels::POD_NAME.into(), name(pod).into());
    l.insert(labels::POD_NAMESPACE.into(), namespace(pod).into());
    l.insert(labels::POD_UID.into(), pod_uid(pod).into());
    l
}

pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

pub fn sandbox_config(cfg: &Config, pod: &Pod, attempt: u32) -> v1::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |host: Option<bool>, pod_wide: bool| {
        if host == Some(true) {
            v1::NamespaceMode::Node
        } else if pod_wide {
            v1::NamespaceMode::Pod
        } else {
            v1::NamespaceMode::Container
        }
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| v1::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => v1::Protocol::Udp,
                Some("SCTP") => v1::Protocol::Sctp,
                _ => v1::Protocol::Tcp,
            } as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let hostname = spec.hostname.clone().unwrap_or_else(|| name(pod).into());
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name(pod).into(),
            uid: pod_uid(pod).into(),
            namespace: namespace(pod).into(),
            attempt,
        }),
        hostname: if spec.host_network == Some(true) {
            String::new()
        } else {
            hostname
        },
        log_directory: log_directory(cfg, pod),
        dns_config: Some(super::dns::for_pod(&cfg.dns, pod)),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: mode(spec.host_network, true) as i32,
                    pid: mode(spec.host_pid, spec.share_process_namespace == Some(true)) as i32,
                    ipc: mode(spec.host_ipc, true) as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The value of a downward-API field path.
fn field(
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
    var: &str,
    path: &str,
) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    Ok(match path {
        "metadata.name" => name(pod).into(),
        "metadata.namespace" => namespace(pod).into(),
        "metadata.uid" => pod_uid(pod).into(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip.into(),
        "status.hostIP" => host_ip.into(),
        p => {
            let lookup =
                |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
                    p.strip_prefix(prefix)
                        .and_then(|k| k.strip_suffix("']"))
                        .map(|k| {
                            map.as_ref()
                                .and_then(|m| m.get(k))
                                .cloned()
                                .unwrap_or_default()
                        })
                };
            lookup("metadata.labels['", &m.labels)
                .or_else(|| lookup("metadata.annotations['", &m.annotations))
                .ok_or_else(|| ConfigError::FieldPath(var.into(), p.into()))?
        }
    })
}

/// Expand `$(VAR)` references to variables defined earlier; `$$` escapes, and unknown
/// references stay as written (Kubernetes' rules).
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let var = &inner[..end];
                    match vars.iter().rev().find(|(k, _)| k == var) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&rest[i..i + 3 + end]),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A key of a ConfigMap or Secret; Ok(None) when optional and absent.
fn lookup(
    sources: &HashMap<String, std::collections::BTreeMap<String, Vec<u8>>>,
    kind: &'static str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, ConfigError> {
    match sources.get(name) {
        None if optional => Ok(None),
        None => Err(ConfigError::Missing(kind, name.into())),
        Some(d) => match d.get(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError::MissingKey(key.into(), kind, name.into())),
        },
    }
}

/// The container's environment: envFrom first, then env (which wins), in order.
fn env(
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
    sources: &Sources,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let valid = |k: &str| {
        !k.is_empty()
            && !k.starts_with(|ch: char| ch.is_ascii_digit())
            && k.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data) = if let Some(r) = &from.config_map_ref {
            (
                "configmap",
                r.name.clone(),
                r.optional == Some(true),
                sources.config_maps.get(&r.name),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                "secret",
                r.name.clone(),
                r.optional == Some(true),
                sources.secrets.get(&r.name),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    let key = format!("{prefix}{k}");
                    if valid(&key) {
                        vars.retain(|(x, _)| *x != key);
                        vars.push((key, String::from_utf8_lossy(v).into_owned()));
                    }
                }
            }
            None if optional => {}
            None => return Err(ConfigError::Missing(kind, name)),
        }
    }
    for EnvVar {
        name: var,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let v = match (value, value_from) {
            (_, Some(from)) => {
                let found = if let Some(f) = &from.field_ref {
                    Some(field(pod, pod_ip, host_ip, var, &f.field_path)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    lookup(
                        &sources.config_maps,
                        "configmap",
                        &r.name,
                        &r.key,
                        r.optional == Some(true),
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    lookup(
                        &sources.secrets,
                        "secret",
                        &r.name,
                        &r.key,
                        r.optional == Some(true),
                    )?
                } else {
                    return Err(ConfigError::UnsupportedEnv(var.clone(), "resourceFieldRef"));
                };
                match found {
                    Some(v) => v,
                    None => continue,
                }
            }
            (Some(v), None) => expand(v, &vars),
            (None, None) => String::new(),
        };
        vars.retain(|(x, _)| x != var);
        vars.push((var.clone(), v));
    }
    Ok(vars)
}

fn resources(c: &Container) -> Result<v1::LinuxContainerResources, ConfigError> {
    let r = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &'static str,
               scale| {
        match m.as_ref().and_then(|m| m.get(key)) {
            None => Ok(None),
            Some(q) => parse_quantity(&q.0, scale)
                .map(Some)
                .ok_or_else(|| ConfigError::Quantity(key, q.0.clone())),
        }
    };
    let limit_cpu = get(&r.limits, "cpu", 1000)?;
    // A container without a CPU request gets its limit as request (Kubernetes defaulting).
    let request_cpu = get(&r.requests, "cpu", 1000)?.or(limit_cpu);
    let limit_mem = get(&r.limits, "memory", 1)?;
    const PERIOD: i64 = 100_000;
    Ok(v1::LinuxContainerResources {
        cpu_period: if limit_cpu.is_some() { PERIOD } else { 0 },
        cpu_quota: limit_cpu.map_or(0, |m| (m * PERIOD / 1000).max(1000)),
        // The kubelet's shares: 1024 per CPU, at least 2.
        cpu_shares: request_cpu.map_or(2, |m| (m * 1024 / 1000).max(2)),
        memory_limit_in_bytes: limit_mem.unwrap_or(0),
        ..Default::default()
    })
}

/// What a container's config is built from besides the pod: its restart count, the
/// pod's IP, the ConfigMaps and Secrets it names, and its volumes' host paths.
pub struct Inputs<'a> {
    pub restart_count: u32,
    pub pod_ip: &'a str,
    pub sources: &'a Sources,
    pub volumes: &'a HashMap<String, std::path::PathBuf>,
}

pub fn container_config(
    cfg: &Config,
    pod: &Pod,
    c: &Container,
    inp: &Inputs,
) -> Result<v1::ContainerConfig, ConfigError> {
    let host_ip = cfg.node_ip.to_string();
    let restart_count = inp.restart_count;
    let envs = env(pod, c, inp.pod_ip, &host_ip, inp.sources)?;
    let mounts = super::volumes::mounts(c, inp.volumes)?;
    // $(VAR) in command and args refers to the container's env.
    let exp = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|s| expand(s, &envs))
            .collect::<Vec<_>>()
    };
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let labels = HashMap::from([
        (labels::POD_NAME.to_string(), name(pod).to_string()),
        (
            labels::POD_NAMESPACE.to_string(),
            namespace(pod).to_string(),
        ),
        (labels::POD_UID.to_string(), pod_uid(pod).to_string()),
        (labels::CONTAINER_NAME.to_string(), c.name.clone()),
    ]);
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: c.name.clone(),
            attempt: restart_count,
        }),
        image: Some(v1::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: exp(&c.command),
        args: exp(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs
            .iter()
            .map(|(k, v)| v1::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        labels,
        mounts,
        annotations: HashMap::from([
            (labels::RESTART_COUNT.to_string(), restart_count.to_string()),
            (
                labels::GRACE_PERIOD.to_string(),
                grace_seconds(pod).to_string(),
            ),
        ]),
        log_path: format!("{}/{restart_count}.log", c.name),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources(c)?),
            security_context: Some(v1::LinuxContainerSecurityContext {
                capabilities: Some(v1::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged: sc.privileged == Some(true),
                run_as_user: sc
                    .run_as_user
                    .or(psc.run_as_user)
                    .map(|value| v1::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|value| v1::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem == Some(true),
                supplemental_groups: psc.supplemental_groups.unwrap_or_default(),
                no_new_privs: sc.allow_privilege_escalation != Some(true)
                    && sc.privileged != Some(true),
                seccomp: Some(seccomp(
                    sc.seccomp_profile.as_ref().or(psc.seccomp_profile.as_ref()),
                )),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// The container's seccomp profile for the CRI. The CRI's default is unconfined; like
/// the kubelet's --seccomp-default, a container that names none gets RuntimeDefault.
fn seccomp(p: Option<&k8s_openapi::api::core::v1::SeccompProfile>) -> v1::SecurityProfile {
    use v1::security_profile::ProfileType;
    let (typ, localhost) = match p.map(|p| (p.type_.as_str(), p.localhost_profile.clone())) {
        Some(("Unconfined", _)) => (ProfileType::Unconfined, None),
        Some(("Localhost", l)) => (ProfileType::Localhost, l),
        _ => (ProfileType::RuntimeDefault, None),
    };
    v1::SecurityProfile {
        profile_type: typ as i32,
        localhost_ref: localhost.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_earlier_vars_and_keeps_unknown_and_escaped() {
        let vars = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn pod_to_cri() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "w"}},
            "spec": {
                "shareProcessNamespace": true,
                "containers": [{
                    "name": "c", "image": "busybox",
                    "command": ["sh", "-c"], "args": ["echo $(GREETING)"],
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "env": [
                        {"name": "WHO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "GREETING", "value": "hi $(WHO)"},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
                    ],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}
                }]
            }
        }))
        .unwrap();
        let cfg = Config::new("n1".into(), "10.0.0.1".parse().unwrap(), "x".into());
        let s = sandbox_config(&cfg, &pod, 0);
        assert_eq!(s.labels[labels::POD_UID], "u1");
        assert_eq!(s.labels["app"], "w");
        assert_eq!(s.log_directory, "/var/log/pods/ns_web_u1");
        assert_eq!(s.port_mappings[0].host_port, 8080);
        let ns = s
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.pid, v1::NamespaceMode::Pod as i32);
        assert_eq!(ns.network, v1::NamespaceMode::Pod as i32);

        let spec = pod.spec.clone().unwrap();
        let none = Sources::default();
        let vols = HashMap::new();
        let inp = |n, ip| Inputs {
            restart_count: n,
            pod_ip: ip,
            sources: &none,
            volumes: &vols,
        };
        let c = container_config(&cfg, &pod, &spec.containers[0], &inp(3, "10.1.0.5")).unwrap();
        assert_eq!(c.args, ["echo hi web"]);
        assert_eq!(c.log_path, "c/3.log");
        assert_eq!(c.metadata.unwrap().attempt, 3);
        let env: HashMap<_, _> = c
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(env["APP"], "w");
        let r = c.linux.unwrap().resources.unwrap();
        assert_eq!(
            (r.cpu_quota, r.cpu_period, r.cpu_shares),
            (50_000, 100_000, 512)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);

        let mut bad = spec.containers[0].clone();
        bad.env = Some(vec![serde_json::from_value(serde_json::json!(
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k"}}}
        ))
        .unwrap()]);
        let e = container_config(&cfg, &pod, &bad, &inp(0, "")).unwrap_err();
        assert_eq!(e.to_string(), "configmap \"m\" not found");
        let mut srcs = Sources::default();
        srcs.config_maps.insert(
            "m".into(),
            [
                ("k".to_string(), b"v".to_vec()),
                ("K2".to_string(), b"w".to_vec()),
            ]
            .into(),
        );
        srcs.secrets
            .insert("s".into(), [("pw".to_string(), b"hunter2".to_vec())].into());
        let mut good = bad.clone();
        good.env_from = Some(vec![serde_json::from_value(serde_json::json!(
            {"configMapRef": {"name": "m"}, "prefix": "CM_"}
        ))
        .unwrap()]);
        good.env.as_mut().unwrap().extend([
            serde_json::from_value(serde_json::json!({"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}})).unwrap(),
            serde_json::from_value(serde_json::json!({"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": true}}})).unwrap(),
        ]);
        let inp2 = Inputs {
            restart_count: 0,
            pod_ip: "",
            sources: &srcs,
            volumes: &vols,
        };
        let c = container_config(&cfg, &pod, &good, &inp2).unwrap();
        let env: Vec<(&str, &str)> = c
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(
            env,
            [("CM_K2", "w"), ("CM_k", "v"), ("X", "v"), ("PW", "hunter2")]
        );
        let mut missing_key = good.clone();
        missing_key.env = Some(vec![serde_json::from_value(serde_json::json!(
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}}
        ))
        .unwrap()]);
        let e = container_config(&cfg, &pod, &missing_key, &inp2).unwrap_err();
        assert_eq!(e.to_string(), "couldn't find key nope in secret s");
    }
}
