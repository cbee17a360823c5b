//! The rules a service port's chains hold, as data: rendered as nft text (what `nft
//! list` shows, and what the fingerprint is taken of) and encoded as nf_tables
//! expressions by [`super::netlink`], so a sync can skip nft's parser and its cache.

use crate::model::Protocol;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRule {
    /// The one rule of a pick chain: DNAT to endpoint `numgen random mod of` of the
    /// service port the packet is addressed to, looked up in the shared endpoint map
    /// (keyed by address, protocol and port, or by protocol and node port).
    Pick {
        nodeport: bool,
        of: u32,
    },
    /// One step of the endpoint cascade: taken with chance 1/`of` (always when None);
    /// with affinity, the client is remembered for `affinity` seconds.
    Dnat {
        protocol: Protocol,
        of: Option<u32>,
        affinity: Option<u32>,
        ip: Ipv4Addr,
        port: u16,
    },
    Jump(String),
    Goto(String),
    Drop,
}

/// `10.1.0.0/16` → (address with the host bits cleared, prefix length).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let (a, p): (Ipv4Addr, u8) = (a.parse().ok()?, p.parse().ok()?);
    if p > 32 {
        return None;
    }
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    Some((Ipv4Addr::from(u32::from(a) & mask), p))
}

impl ServiceRule {
    pub fn text(&self) -> String {
        match self {
            ServiceRule::Pick {
                nodeport: false,
                of,
            } => format!(
                "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {of} map @{}",
                super::layout::ADDRESS_ENDPOINTS
            ),
            ServiceRule::Pick { nodeport: true, of } => format!(
                "dnat ip to meta l4proto . th dport . numgen random mod {of} map @{}",
                super::layout::NODEPORT_ENDPOINTS
            ),
            ServiceRule::Dnat {
                protocol,
                of,
                affinity,
                ip,
                port,
            } => {
                let chance = of
                    .map(|n| format!(" numgen random mod {n} 0"))
                    .unwrap_or_default();
                let remember = affinity
                    .map(|t| {
                        format!(
                            " update @affinity {{ ip saddr . ip daddr . th dport timeout {t}s : {ip} . {port} }}"
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "meta l4proto {}{chance}{remember} dnat to {ip}:{port}",
                    protocol.name()
                )
            }
            ServiceRule::Jump(c) => format!("jump {c}"),
            ServiceRule::Goto(c) => format!("goto {c}"),
            ServiceRule::Drop => "drop".into(),
        }
    }
}
