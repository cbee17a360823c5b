//! Links, addresses and routes through rtnetlink. Work inside a pod's network namespace
//! runs on a thread that entered it and opened its own netlink socket there.

use crate::error::{CniError, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// Run `f` with a netlink handle in the current network namespace.
pub fn with_handle<T>(f: impl AsyncFnOnce(Handle) -> Result<T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// Run `f` inside the network namespace at `netns` (on a dedicated thread).
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = std::fs::File::open(netns)
        .map_err(|e| CniError::UnknownContainer(format!("netns {}: {e}", netns.display())))?;
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| CniError::Io(format!("enter netns: {e}")))?;
        f()
    })
    .join()
    .map_err(|_| CniError::Io("netns worker panicked".into()))?
}

pub async fn link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn mac(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

async fn has_addr(h: &Handle, index: u32, ip: Ipv4Addr) -> Result<bool> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut s = h.address().get().set_link_index_filter(index).execute();
    while let Some(m) = s.try_next().await? {
        if m.attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(a)) if *a == ip))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Create the bridge if needed, give it the gateway address, bring it up.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    gw: Option<(Ipv4Addr, u8)>,
    mtu: Option<u32>,
) -> Result<LinkMessage> {
    if link(h, name).await?.is_none() {
        let mut b = LinkBridge::new(name);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        match h.link().add(b.build()).execute().await {
            Ok(()) => {}
            // Another ADD created it concurrently.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(e.into()),
        }
    }
    let br = link(h, name)
        .await?
        .ok_or_else(|| CniError::Netlink(format!("bridge {name} vanished")))?;
    if let Some((ip, prefix)) = gw {
        if !has_addr(h, br.header.index, ip).await? {
            h.address()
                .add(br.header.index, IpAddr::V4(ip), prefix)
                .replace()
                .execute()
                .await?;
        }
    }
    h.link()
        .set(LinkUnspec::new_with_index(br.header.index).up().build())
        .execute()
        .await?;
    Ok(link(h, name).await?.unwrap_or(br))
}

/// Create the veth pair, attach the host end to the bridge (hairpin on if asked) and move
/// the other end into the pod's namespace under a temporary name.
pub async fn add_veth(
    h: &Handle,
    bridge: u32,
    host: &str,
    peer_tmp: &str,
    netns: &Path,
    hairpin: bool,
    mtu: Option<u32>,
) -> Result<LinkMessage> {
    if let Some(old) = link(h, host).await? {
        // A leftover of an interrupted ADD for the same attachment.
        h.link().del(old.header.index).execute().await?;
    }
    let mut v = LinkVeth::new(host, peer_tmp);
    if let Some(m) = mtu {
        v = v.mtu(m);
    }
    h.link().add(v.build()).execute().await?;
    let peer = link(h, peer_tmp)
        .await?
        .ok_or_else(|| CniError::Netlink(format!("veth peer {peer_tmp} missing")))?;
    let ns = std::fs::File::open(netns)
        .map_err(|e| CniError::UnknownContainer(format!("netns {}: {e}", netns.display())))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(peer.header.index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await?;
    let hl = link(h, host)
        .await?
        .ok_or_else(|| CniError::Netlink(format!("veth {host} missing")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(hl.header.index)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await?;
    if hairpin {
        h.link()
            .set_port(LinkBridgePort::new(hl.header.index).hairpin(true).build())
            .execute()
            .await?;
    }
    Ok(hl)
}

/// Inside the pod namespace: rename the veth end, address it, bring it and lo up, and
/// route everything through the gateway.
pub async fn configure_pod_side(
    h: &Handle,
    tmp: &str,
    ifname: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
) -> Result<LinkMessage> {
    let l = link(h, tmp)
        .await?
        .ok_or_else(|| CniError::Netlink(format!("{tmp} did not arrive in the pod namespace")))?;
    let idx = l.header.index;
    h.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name(ifname.to_string())
                .build(),
        )
        .execute()
        .await?;
    h.address()
        .add(idx, IpAddr::V4(ip), prefix)
        .replace()
        .execute()
        .await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await?;
    if let Some(lo) = link(h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await?;
    }
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gw)
        .output_interface(idx)
        .build();
    match h.route().add(route).execute().await {
        Ok(()) => {}
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
        Err(e) => return Err(e.into()),
    }
    Ok(link(h, ifname).await?.unwrap_or(l))
}

/// Does `ifname` exist with `ip`?
pub async fn check_pod_side(h: &Handle, ifname: &str, ip: Ipv4Addr) -> Result<()> {
    let l = link(h, ifname).await?.ok_or_else(|| {
        CniError::Netlink(format!(
            "interface {ifname} is missing from the pod namespace"
        ))
    })?;
    if !has_addr(h, l.header.index, ip).await? {
        return Err(CniError::Netlink(format!("{ifname} does not have {ip}")));
    }
    Ok(())
}

/// Delete `ifname` (and with it its veth peer); absent is fine.
pub async fn delete_link(h: &Handle, ifname: &str) -> Result<()> {
    if let Some(l) = link(h, ifname).await? {
        h.link().del(l.header.index).execute().await?;
    }
    Ok(())
}
