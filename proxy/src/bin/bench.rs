//! Rule programming time of both modes side by side, in a private network namespace:
//!   skiff-proxy-bench [--services 1000,5000,10000,20000] [--endpoints 2,10] [--modes nftables,iptables]
//! For each size: the first full sync, a sync after one endpoint changed, one after a
//! service was added (each the median and the largest of 20), a periodic resync with nothing changed, and a restart (a new
//! proxier reads the table back and finds nothing to change); then the first-packet
//! connect time to a ClusterIP (median of new connections from a client in the
//! namespace to a listener behind the service). Needs root, nft and iptables-restore.

use anyhow::{Context, Result};
use clap::Parser;
use skiff_proxy::apply::{cleanup, Applier, Mode};
use skiff_proxy::{Options, Protocol, ServicePort};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 5000, 10000, 20000])]
    services: Vec<u32>,
    #[arg(long, value_delimiter = ',', default_values_t = vec![2, 10])]
    endpoints: Vec<u32>,
    #[arg(long, value_delimiter = ',', default_values_t = vec!["nftables".to_string(), "iptables".to_string()])]
    modes: Vec<String>,
    /// New connections per connect-time measurement.
    #[arg(long, default_value_t = 200)]
    connects: u32,
}

/// The listener every bench service's first endpoint points at.
const TARGET: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

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
            // Every endpoint of the measured services is the listener (on distinct
            // ports), so any pick connects.
            endpoints: (0..eps)
                .map(|e| (Ipv4Addr::from(0x0a80_0000 + i * eps + e), 8080))
                .collect(),
        })
        .collect()
}

/// How many single changes of each kind are timed.
const CHANGES: usize = 20;

/// The median and the largest of a few timings, printed `median (max)`.
struct Spread(f64, f64);

impl Spread {
    fn of(mut times: Vec<f64>) -> Spread {
        times.sort_by(f64::total_cmp);
        Spread(times[times.len() / 2], times[times.len() - 1])
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = format!("{:.1} ({:.1})", self.0, self.1);
        f.pad(&s)
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Median time of `n` new TCP connections to `to` (each a new conntrack entry, so each
/// walks the NAT rules).
fn connect_ms(to: SocketAddr, n: u32) -> Result<f64> {
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .with_context(|| format!("connect {to}"))?;
        times.push(ms(t));
        drop(s);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn sh(cmd: &str) -> Result<()> {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()?;
    anyhow::ensure!(st.success(), "{cmd}");
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ns = format!("skiff-proxy-bench-{}", std::process::id());
    sh(&format!("ip netns add {ns}")).context("needs root")?;
    let r = bench(&args, &ns);
    let _ = sh(&format!("ip netns del {ns}"));
    r
}

fn bench(args: &Args, ns: &str) -> Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).context("open the netns")?;
    // This thread (and the nft/iptables it runs) works in the private namespace.
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    sh(
        "ip link set lo up && ip addr add 10.250.0.1/32 dev lo && ip route add 10.96.0.0/12 dev lo",
    )?;
    let listener = TcpListener::bind((TARGET, 8080))?;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let opts = Options {
        cluster_cidr: Some("10.128.0.0/9".into()),
        ..Options::default()
    };
    println!(
        "mode      services  endpoints  full sync ms  one endpoint ms (max)  one service ms (max)  resync ms  restart ms  connect ms (first, last service)"
    );
    for n in &args.services {
        for eps in &args.endpoints {
            for mode in &args.modes {
                let mode = match mode.as_str() {
                    "nftables" => Mode::Nftables,
                    "iptables" => Mode::Iptables,
                    m => anyhow::bail!("unknown mode {m}"),
                };
                let mut a = Applier::new(mode, opts.clone());
                let mut p = ports(*n, *eps);
                // The first and the last service lead to the listener.
                for i in [0, p.len() - 1] {
                    for ep in p[i].endpoints.iter_mut() {
                        *ep = (TARGET, 8080);
                    }
                    p[i].endpoints.dedup();
                }
                let t = Instant::now();
                a.sync(&p)?;
                let full = ms(t);
                let mut times = Vec::new();
                for i in 0..CHANGES {
                    p[1].endpoints[0].0 = Ipv4Addr::new(10, 255, 0, i as u8 + 1);
                    let t = Instant::now();
                    a.sync(&p)?;
                    times.push(ms(t));
                }
                let change = Spread::of(times);
                let mut times = Vec::new();
                for i in 0..CHANGES {
                    let mut extra = ports(1, *eps);
                    extra[0].name = format!("added{i}");
                    extra[0].cluster_ip = Some(Ipv4Addr::new(10, 111, 0, i as u8 + 1));
                    extra[0].node_port = None;
                    // Before the last (listener) service, which the connect test uses.
                    let at = p.len() - 1;
                    p.insert(at, extra.remove(0));
                    let t = Instant::now();
                    a.sync(&p)?;
                    times.push(ms(t));
                }
                let added = Spread::of(times);
                let t = Instant::now();
                let o = a.resync(&p)?;
                let resync = ms(t);
                anyhow::ensure!(!o.changed(), "a resync with nothing changed changed {o:?}");
                let mut b = Applier::new(mode, opts.clone());
                let t = Instant::now();
                let o = b.sync(&p)?;
                let restart = ms(t);
                if mode == Mode::Nftables {
                    anyhow::ensure!(!o.changed(), "a restart changed {o:?}");
                }
                let first = connect_ms(
                    SocketAddr::from((p[0].cluster_ip.unwrap(), 80)),
                    args.connects,
                )?;
                let last = connect_ms(
                    SocketAddr::from((p[p.len() - 1].cluster_ip.unwrap(), 80)),
                    args.connects,
                )?;
                println!(
                    "{:<9} {:>8}  {:>9}  {full:>12.1}  {change:>21}  {added:>20}  {resync:>9.1}  {restart:>10.1}  {first:.3}, {last:.3}",
                    format!("{mode:?}").to_lowercase(),
                    n,
                    eps
                );
                cleanup(mode, &opts)?;
            }
        }
    }
    Ok(())
}
