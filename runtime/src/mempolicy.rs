//! `linux.memoryPolicy`: the NUMA memory policy of the container's processes, through
//! set_mempolicy(2), checked as runc checks it.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::{LinuxMemoryPolicy, MemoryPolicyFlagType, MemoryPolicyModeType};

/// What set_mempolicy(2) is called with.
#[derive(Debug, PartialEq)]
pub struct Policy {
    pub mode: i32,
    pub mask: Vec<libc::c_ulong>,
    /// Highest node number + 1 (0 with an empty mask).
    pub maxnode: u64,
}

const BITS: usize = libc::c_ulong::BITS as usize;

/// Parse "0-3,7" into node numbers.
pub fn parse_nodes(s: &str) -> Result<Vec<usize>> {
    let bad = || Error::InvalidConfig(format!("linux.memoryPolicy.nodes {s:?} is not a node list"));
    let mut nodes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b >= 4096 {
            return Err(bad());
        }
        nodes.extend(a..=b);
    }
    Ok(nodes)
}

/// Check the policy and turn it into set_mempolicy's arguments.
pub fn plan(p: &LinuxMemoryPolicy) -> Result<Policy> {
    use MemoryPolicyModeType::*;
    let nodes = parse_nodes(p.nodes().as_deref().unwrap_or(""))?;
    let mode = p.mode();
    let name = mode.to_string();
    match mode {
        MpolDefault | MpolLocal if !nodes.is_empty() => {
            return Err(Error::InvalidConfig(format!(
                "linux.memoryPolicy: {name} takes no nodes"
            )))
        }
        MpolBind | MpolInterleave | MpolWeightedInterleave | MpolPreferredMany
            if nodes.is_empty() =>
        {
            return Err(Error::InvalidConfig(format!(
                "linux.memoryPolicy: {name} needs nodes"
            )))
        }
        _ => {}
    }
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
        };
    }
    let base = match mode {
        MpolDefault => 0,
        MpolPreferred => 1,
        MpolBind => 2,
        MpolInterleave => 3,
        MpolLocal => 4,
        MpolPreferredMany => 5,
        MpolWeightedInterleave => 6,
    };
    let maxnode = nodes.iter().max().map_or(0, |m| m + 1);
    let mut mask = vec![0 as libc::c_ulong; maxnode.div_ceil(BITS)];
    for n in nodes {
        mask[n / BITS] |= 1 << (n % BITS);
    }
    Ok(Policy {
        mode: base | flags,
        mask,
        // The kernel reads maxnode - 1 bits (a historical off-by-one every caller pads).
        maxnode: if maxnode == 0 { 0 } else { maxnode as u64 + 1 },
    })
}

/// Set the calling thread's policy (inherited by everything it then execs and forks).
pub fn apply(p: &Policy) -> Result<()> {
    let mask = if p.mask.is_empty() {
        std::ptr::null()
    } else {
        p.mask.as_ptr()
    };
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, p.mode, mask, p.maxnode) };
    nix::errno::Errno::result(r)
        .map(drop)
        .step(|| format!("set memory policy (mode {:#x})", p.mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Result<Policy> {
        plan(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn nodes_and_modes() {
        assert_eq!(parse_nodes("0-2,7").unwrap(), [0, 1, 2, 7]);
        assert!(parse_nodes("3-1").is_err() && parse_nodes("x").is_err());
        let p =
            policy(r#"{"mode":"MPOL_INTERLEAVE","nodes":"0,2","flags":["MPOL_F_STATIC_NODES"]}"#)
                .unwrap();
        assert_eq!(p.mode, 3 | 1 << 15);
        assert_eq!(p.mask, [0b101]);
        assert_eq!(p.maxnode, 4);
        let d = policy(r#"{"mode":"MPOL_DEFAULT"}"#).unwrap();
        assert_eq!((d.mode, d.mask.len(), d.maxnode), (0, 0, 0));
        assert!(policy(r#"{"mode":"MPOL_DEFAULT","nodes":"0"}"#).is_err());
        assert!(policy(r#"{"mode":"MPOL_BIND"}"#).is_err());
    }
}
