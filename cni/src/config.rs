//! The network configuration on stdin and the CNI_* environment.

use crate::error::{CniError, Result};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "yes")]
    pub is_gateway: bool,
    #[serde(default = "yes")]
    pub ip_masq: bool,
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Traffic to this CIDR is not masqueraded (the cluster's pod network); defaults to the subnet.
    #[serde(default)]
    pub cluster_cidr: Option<String>,
    pub ipam: IpamConf,
    /// CNI 1.1 GC: attachments that must be kept.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Per-container settings from the runtime (the `portMappings` capability).
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// A host port forwarded to the container (the CNI portMappings convention).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub typ: String,
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub range_start: Option<Ipv4Addr>,
    #[serde(default)]
    pub range_end: Option<Ipv4Addr>,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_bridge() -> String {
    "skiff0".into()
}
fn yes() -> bool {
    true
}

/// An IPv4 network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Result<Net> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| CniError::InvalidConfig(format!("{s:?} is not a CIDR")))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| CniError::InvalidConfig(format!("{s:?}: bad address")))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| CniError::InvalidConfig(format!("{s:?}: bad prefix")))?;
        Ok(Net {
            addr: Ipv4Addr::from(u32::from(addr) & Net::mask_of(prefix)),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Net::mask_of(self.prefix) == u32::from(self.addr)
    }

    pub fn network(&self) -> u32 {
        u32::from(self.addr)
    }

    pub fn broadcast(&self) -> u32 {
        self.network() | !Net::mask_of(self.prefix)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The CNI_* environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
}

impl Env {
    pub fn from_env() -> Result<Env> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let command = get("CNI_COMMAND")
            .ok_or_else(|| CniError::InvalidEnv("CNI_COMMAND is not set".into()))?;
        Ok(Env {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
        })
    }

    /// ADD/CHECK need all of them; DEL tolerates a missing netns.
    pub fn require(&self, netns: bool) -> Result<()> {
        if self.container_id.is_empty() {
            return Err(CniError::InvalidEnv("CNI_CONTAINERID is not set".into()));
        }
        if self.ifname.is_empty() {
            return Err(CniError::InvalidEnv("CNI_IFNAME is not set".into()));
        }
        if netns && self.netns.is_none() {
            return Err(CniError::InvalidEnv("CNI_NETNS is not set".into()));
        }
        Ok(())
    }
}

pub fn parse(stdin: &str) -> Result<NetConf> {
    let c: NetConf = serde_json::from_str(stdin).map_err(|e| CniError::Decode(e.to_string()))?;
    if !SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()) {
        return Err(CniError::IncompatibleVersion(format!(
            "{} (supported: {})",
            c.cni_version,
            SUPPORTED_VERSIONS.join(", ")
        )));
    }
    if c.bridge.is_empty() || c.bridge.len() > 15 {
        return Err(CniError::InvalidConfig(format!(
            "bridge name {:?} must be 1-15 characters",
            c.bridge
        )));
    }
    if !matches!(c.ipam.typ.as_str(), "" | "host-local" | "skiff") {
        return Err(CniError::UnsupportedField(format!(
            "ipam.type {:?}: skiff-cni has its own host-local IPAM",
            c.ipam.typ
        )));
    }
    Net::parse(&c.ipam.subnet)?;
    if let Some(cc) = &c.cluster_cidr {
        Net::parse(cc)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        let n = Net::parse("10.88.3.7/24").unwrap();
        assert_eq!(n.to_string(), "10.88.3.0/24");
        assert!(n.contains("10.88.3.200".parse().unwrap()));
        assert!(!n.contains("10.88.4.1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(Net::parse("nonsense").is_err());
    }

    #[test]
    fn config_errors_have_codes() {
        assert_eq!(parse("{").unwrap_err().code(), 6);
        let old = r#"{"cniVersion":"0.2.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.1.0.0/24"}}"#;
        assert_eq!(parse(old).unwrap_err().code(), 1);
        let bad = r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.1.0.0/99"}}"#;
        assert_eq!(parse(bad).unwrap_err().code(), 7);
        let ok = r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","ipam":{"subnet":"10.1.0.0/24"}}"#;
        let c = parse(ok).unwrap();
        assert_eq!(c.bridge, "skiff0");
        assert!(c.ip_masq && c.is_gateway && c.hairpin_mode);
    }
}
