//! skiff-cni: a CNI 1.0 plugin (with 1.1's STATUS and GC). Network config on stdin,
//! CNI_* in the environment, the result or an error as the spec's JSON on stdout.

mod config;
mod error;
mod ipam;
mod netlink;
mod nft;

use config::{Env, Net, NetConf};
use error::{CniError, Result};
use serde_json::{json, Value};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

fn host_veth_name(cid: &str, ifname: &str) -> String {
    // Stable per attachment, 15 characters at most: "veth" + 8 hex digits of FNV-1a.
    let mut h: u32 = 0x811c9dc5;
    for b in cid.bytes().chain([0]).chain(ifname.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

fn data_dir(c: &NetConf) -> PathBuf {
    c.ipam
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(ipam::DEFAULT_DATA_DIR))
}

fn range(c: &NetConf) -> Result<ipam::Range> {
    ipam::Range::new(
        Net::parse(&c.ipam.subnet)?,
        c.ipam.gateway,
        c.ipam.range_start,
        c.ipam.range_end,
    )
}

fn add(c: &NetConf, env: &Env) -> Result<Value> {
    env.require(true)?;
    let netns = env.netns.clone().unwrap();
    nft::validate_port_mappings(&c.runtime_config.port_mappings)?;
    let r = range(c)?;
    let store = ipam::Store::open(&data_dir(c), &c.name)?;
    let ip = store.allocate(&env.container_id, &env.ifname, &r)?;
    let res = setup(c, env, &netns, &r, ip);
    if res.is_err() {
        // Leave nothing half-made: the address goes back to the pool.
        let _ = store.release(&env.container_id, &env.ifname);
    }
    res
}

fn setup(c: &NetConf, env: &Env, netns: &Path, r: &ipam::Range, ip: Ipv4Addr) -> Result<Value> {
    let host = host_veth_name(&env.container_id, &env.ifname);
    let tmp = format!("sk{}", &host[4..]);
    let gw = c.is_gateway.then_some((r.gateway, r.net.prefix));
    let (bridge, hostl) = netlink::with_handle(async |h| {
        let br = netlink::ensure_bridge(&h, &c.bridge, gw, c.mtu).await?;
        let hl = netlink::add_veth(
            &h,
            br.header.index,
            &host,
            &tmp,
            netns,
            c.hairpin_mode,
            c.mtu,
        )
        .await?;
        Ok((br, hl))
    })?;
    let (ifname, prefix, gwip) = (env.ifname.clone(), r.net.prefix, r.gateway);
    let pod = netlink::in_netns(netns, move || {
        netlink::with_handle(async |h| {
            netlink::configure_pod_side(&h, &tmp, &ifname, ip, prefix, gwip).await
        })
    })?;
    if c.ip_masq {
        let cluster = c.cluster_cidr.clone().unwrap_or_else(|| r.net.to_string());
        nft::ensure_masquerade(&c.name, &r.net.to_string(), &cluster)?;
    }
    nft::add_port_mappings(ip, &c.bridge, &c.runtime_config.port_mappings)?;
    Ok(json!({
        "cniVersion": c.cni_version,
        "interfaces": [
            {"name": c.bridge, "mac": netlink::mac(&bridge)},
            {"name": host, "mac": netlink::mac(&hostl)},
            {"name": env.ifname, "mac": netlink::mac(&pod), "sandbox": netns},
        ],
        "ips": [{"address": format!("{ip}/{}", r.net.prefix), "gateway": r.gateway.to_string(), "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": r.gateway.to_string()}],
        "dns": {}
    }))
}

fn del(c: &NetConf, env: &Env) -> Result<()> {
    env.require(false)?;
    if let Some(netns) = env.netns.clone().filter(|p| p.exists()) {
        let ifname = env.ifname.clone();
        netlink::in_netns(&netns, move || {
            netlink::with_handle(async |h| netlink::delete_link(&h, &ifname).await)
        })?;
    }
    // The host end goes with its peer; remove it explicitly when the netns is already gone.
    let host = host_veth_name(&env.container_id, &env.ifname);
    netlink::with_handle(async |h| netlink::delete_link(&h, &host).await)?;
    let store = ipam::Store::open(&data_dir(c), &c.name)?;
    let ip = store.find(&env.container_id, &env.ifname)?;
    nft::del_port_mappings(ip, &c.runtime_config.port_mappings)?;
    store.release(&env.container_id, &env.ifname)?;
    Ok(())
}

fn check(c: &NetConf, env: &Env) -> Result<()> {
    env.require(true)?;
    let store = ipam::Store::open(&data_dir(c), &c.name)?;
    let ip = store.find(&env.container_id, &env.ifname)?.ok_or_else(|| {
        CniError::UnknownContainer(format!(
            "no address is allocated to {}/{}",
            env.container_id, env.ifname
        ))
    })?;
    let ifname = env.ifname.clone();
    netlink::in_netns(&env.netns.clone().unwrap(), move || {
        netlink::with_handle(async |h| netlink::check_pod_side(&h, &ifname, ip).await)
    })?;
    let bridge = c.bridge.clone();
    netlink::with_handle(async |h| {
        netlink::link(&h, &bridge)
            .await?
            .ok_or_else(|| CniError::Netlink(format!("bridge {bridge} is missing")))?;
        Ok(())
    })
}

fn run(env: &Env, stdin: &str) -> Result<Option<Value>> {
    if env.command == "VERSION" {
        let v = serde_json::from_str::<Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .unwrap_or_else(|| "1.0.0".into());
        return Ok(Some(
            json!({"cniVersion": v, "supportedVersions": config::SUPPORTED_VERSIONS}),
        ));
    }
    let c = config::parse(stdin)?;
    match env.command.as_str() {
        "ADD" => add(&c, env).map(Some),
        "DEL" => del(&c, env).map(|()| None),
        "CHECK" => check(&c, env).map(|()| None),
        "STATUS" => {
            range(&c)?;
            ipam::Store::open(&data_dir(&c), &c.name)?;
            Ok(None)
        }
        "GC" => {
            let store = ipam::Store::open(&data_dir(&c), &c.name)?;
            store.gc(c.valid_attachments.as_deref().unwrap_or(&[]))?;
            Ok(None)
        }
        other => Err(CniError::InvalidEnv(format!(
            "CNI_COMMAND {other:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"
        ))),
    }
}

fn main() {
    // stdout is the CNI result; what went wrong is also logged on stderr (the runtime
    // keeps it) with the container's identity, at RUST_LOG's level (warn by default).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let version = serde_json::from_str::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".into());
    let (env, result) = match Env::from_env() {
        Ok(env) => {
            let r = run(&env, &stdin);
            (Some(env), r)
        }
        Err(e) => (None, Err(e)),
    };
    match result {
        Ok(Some(v)) => println!("{v}"),
        Ok(None) => {}
        Err(e) => {
            match &env {
                Some(env) => tracing::error!(
                    command = %env.command,
                    container = %env.container_id,
                    netns = ?env.netns,
                    ifname = %env.ifname,
                    error = %e,
                    "skiff-cni failed"
                ),
                None => tracing::error!(error = %e, "skiff-cni failed"),
            }
            println!("{}", e.to_json(&version));
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn veth_names_are_stable_and_short() {
        let a = super::host_veth_name("abc", "eth0");
        assert_eq!(a, super::host_veth_name("abc", "eth0"));
        assert_ne!(a, super::host_veth_name("abc", "eth1"));
        assert!(a.len() <= 15 && a.starts_with("veth"));
    }
}
