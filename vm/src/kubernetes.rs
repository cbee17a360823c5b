//! A Kubernetes cluster on booted VMs, formed the way a person forms one with the
//! README: the control plane on node-1 (`vm/cluster/control-plane.sh`), a bootstrap
//! token, every other node joined with it (`vm/cluster/node.sh`, the same scripts the
//! Vagrantfile runs). The admin kubeconfig names node-1's API server through its
//! host-forwarded loopback port, so the host's kubectl drives the cluster.

use crate::cluster::{node_ip, Cluster};
use crate::qemu::FORWARD_MAC;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// What `form` needs: where the skiff binaries are inside the VMs (under /skiff, the
/// workspace) and image archives to import on every node.
pub struct FormOptions {
    pub bin_dir: String,
    pub images: Vec<String>,
    pub api_port: u16,
    /// More skiff-control flags.
    pub control_args: String,
}

const LONG: Duration = Duration::from_secs(600);

fn run(c: &Cluster, node: &str, script: &str) -> Result<String> {
    let r = c.exec(node, &["sh", "-c", script], LONG)?;
    if !r.ok() {
        bail!(
            "{node}: exit {}\n{}{}\nconsole:\n{}",
            r.code,
            r.stdout,
            r.stderr,
            c.console_tail(node, 20)
        );
    }
    Ok(r.stdout)
}

/// Form the cluster; the admin kubeconfig (also written as `kubeconfig` in the
/// cluster's state directory).
pub fn form(c: &Cluster, o: &FormOptions) -> Result<String> {
    let cp = &c.state.nodes[0].name;
    let cp_ip = node_ip(0);
    let bin = &o.bin_dir;
    // The host-forwarded link: found by its MAC, given the address QEMU forwards to.
    run(
        c,
        cp,
        &format!(
            "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {FORWARD_MAC} ] && n=${{d##*/}}; done; \
             [ -n \"$n\" ] || {{ echo no forwarded link >&2; exit 1; }}; \
             ip addr add 10.0.2.15/24 dev $n; ip link set $n up"
        ),
    )?;
    run(
        c,
        cp,
        &format!(
            "BIN={bin} NODE_IP={cp_ip} ALSO_BIND=10.0.2.15 sh /skiff/vm/cluster/control-plane.sh"
        ),
    )?;
    let server = format!("https://{cp_ip}:6443");
    let r = c.exec(
        cp,
        &[
            &format!("{bin}/skiff-control"),
            "--data-dir",
            "/var/lib/skiff/control",
            "token",
            "create",
            "--server",
            &server,
        ],
        LONG,
    )?;
    if !r.ok() {
        bail!("token create: {}{}", r.stdout, r.stderr);
    }
    let token = r.stdout.trim().to_string();
    let hash = r
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "--ca-cert-hash")
        .nth(1)
        .context("the CA pin in token create's output")?
        .to_string();
    let images = o.images.join(" ");
    let joined: Vec<Result<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = c.state.nodes[1..]
            .iter()
            .map(|n| {
                let script = format!(
                    "NODE={} NODE_IP={} SERVER={server} TOKEN={token} CA_HASH={hash} BIN={bin} \
                     IMAGES='{images}' sh /skiff/vm/cluster/node.sh",
                    n.name, n.ip
                );
                s.spawn(move || run(c, &n.name, &script))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("join thread"))
            .collect()
    });
    for j in joined {
        j?;
    }
    let kc = run(
        c,
        cp,
        &format!(
            "{bin}/skiff-control --data-dir /var/lib/skiff/control kubeconfig --server https://127.0.0.1:{}",
            o.api_port
        ),
    )?;
    std::fs::write(c.dir.join("kubeconfig"), &kc)?;
    Ok(kc)
}
