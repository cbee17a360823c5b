//! Rule programming time of both modes side by side, in a private network namespace:
//!   skiff-proxy-bench [--services 1000,5000] [--endpoints 2]
//! For each size: the first full sync, a sync after one endpoint changed, and a no-op
//! sync; nftables then iptables, in one run. Needs root, nft and iptables-restore.

use anyhow::{Context, Result};
use clap::Parser;
use skiff_proxy::apply::{cleanup, Applier, Mode};
use skiff_proxy::{Options, Protocol, ServicePort};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 5000])]
    services: Vec<u32>,
    #[arg(long, default_value_t = 2)]
    endpoints: u32,
}

fn ports(n: u32, eps: u32) -> Vec<ServicePort> {
    (0..n)
        .map(|i| ServicePort {
            namespace: "bench".into(),
            name: format!("svc{i}"),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Some(Ipv4Addr::from(0x0a60_0000 + i + 10)),
            external_ips: Vec::new(),
            port: 80,
            node_port: (i < 2000).then_some(30000 + i as u16),
            affinity_seconds: None,
            local_endpoints: Vec::new(),
            external_local: false,
            internal_local: false,
            endpoints: (0..eps)
                .map(|e| (Ipv4Addr::from(0x0a80_0000 + i * eps + e), 8080))
                .collect(),
        })
        .collect()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ns = format!("skiff-proxy-bench-{}", std::process::id());
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()?;
    anyhow::ensure!(st.success(), "ip netns add {ns} (needs root)");
    let f = std::fs::File::open(format!("/run/netns/{ns}")).context("open the netns")?;
    // This thread (and the nft/iptables it runs) works in the private namespace.
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    let opts = Options {
        cluster_cidr: Some("10.128.0.0/9".into()),
        ..Options::default()
    };
    println!("mode      services  endpoints  full sync ms  one change ms  no-op ms");
    let mut result = Ok(());
    for n in &args.services {
        for mode in [Mode::Nftables, Mode::Iptables] {
            let mut a = Applier::new(mode, opts.clone());
            let mut p = ports(*n, args.endpoints);
            let t = Instant::now();
            if let Err(e) = a.sync(&p) {
                result = Err(e.into());
                break;
            }
            let full = ms(t);
            p[0].endpoints[0].0 = Ipv4Addr::new(10, 255, 0, 1);
            let t = Instant::now();
            a.sync(&p)?;
            let change = ms(t);
            let t = Instant::now();
            a.sync(&p)?;
            let noop = ms(t);
            println!(
                "{:<9} {:>8}  {:>9}  {full:>12.1}  {change:>13.1}  {noop:>8.2}",
                format!("{mode:?}").to_lowercase(),
                n,
                args.endpoints
            );
            cleanup(mode, &opts)?;
        }
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status();
    result
}
