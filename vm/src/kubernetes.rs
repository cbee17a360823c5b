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
    /// More skiff-kubelet flags on every worker.
    pub kubelet_args: String,
    /// A registry on node-1 that every node uses as docker.io's mirror.
    pub mirror: Option<Mirror>,
}

/// What the cluster's registry holds: filled from the host at formation (skopeo through
/// the forwarded port), so `image: nginx` pulls from it as from Docker Hub.
pub struct Mirror {
    /// The host loopback port forwarded to node-1's registry (`UpOptions::registry_forward`).
    pub host_port: u16,
    /// (OCI archive on the host, `repository:tag` under docker.io), e.g. `library/nginx:latest`.
    pub images: Vec<(std::path::PathBuf, String)>,
}

/// How a worker joins: kept in the cluster's state directory (`join.json`), so a node
/// that was killed and booted again joins the same way.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinSpec {
    pub server: String,
    pub token: String,
    pub ca_hash: String,
    pub bin_dir: String,
    pub images: String,
    pub kubelet_args: String,
    /// REGISTRY=URL mirrors for the runtime (space-separated).
    #[serde(default)]
    pub mirrors: String,
}

/// Join one VM as a worker (`vm/cluster/node.sh`, what a person runs on a new machine).
pub fn join(c: &Cluster, node: &str, j: &JoinSpec) -> Result<String> {
    let n = c.node(node)?;
    let script = format!(
        "NODE={} NODE_IP={} SERVER={} TOKEN={} CA_HASH={} BIN={} IMAGES='{}' KUBELET_ARGS='{}' \
         REGISTRY_MIRRORS='{}' sh /skiff/vm/cluster/node.sh",
        n.name, n.ip, j.server, j.token, j.ca_hash, j.bin_dir, j.images, j.kubelet_args, j.mirrors
    );
    run(c, node, &script)
}

/// Join a node of a formed cluster again (after `Cluster::start`: a fresh machine
/// under the old name, as a reinstalled server).
pub fn rejoin(c: &Cluster, node: &str) -> Result<String> {
    let text = std::fs::read_to_string(c.dir.join("join.json"))
        .with_context(|| format!("cluster {} was not formed with --kubernetes", c.state.name))?;
    join(c, node, &serde_json::from_str(&text)?)
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
            "BIN={bin} NODE_IP={cp_ip} ALSO_BIND=10.0.2.15 CONTROL_ARGS='{}' \
             sh /skiff/vm/cluster/control-plane.sh",
            o.control_args
        ),
    )?;
    let mut mirrors = String::new();
    if let Some(m) = &o.mirror {
        // The registry on the private network; the forwarded link's port 5000 led to it.
        run(
            c,
            cp,
            &format!(
                "NODE_IP={cp_ip} sh /skiff/vm/cluster/registry.sh && \
                 for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {FORWARD_MAC} ] && n=${{d##*/}}; done; \
                 nft add table ip skiff-vm && \
                 nft add chain ip skiff-vm pre '{{ type nat hook prerouting priority dstnat; }}' && \
                 nft add rule ip skiff-vm pre iifname $n tcp dport 5000 dnat to {cp_ip}:5000"
            ),
        )?;
        for (archive, reference) in &m.images {
            let o = std::process::Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("docker://127.0.0.1:{}/{reference}", m.host_port))
                .output()
                .context("run skopeo (apt-get install skopeo)")?;
            if !o.status.success() {
                bail!(
                    "push {} as {reference}: {}",
                    archive.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        mirrors = format!("docker.io=http://{cp_ip}:5000");
    }
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
    let spec = JoinSpec {
        server,
        token,
        ca_hash: hash,
        bin_dir: bin.clone(),
        images: o.images.join(" "),
        kubelet_args: o.kubelet_args.clone(),
        mirrors,
    };
    std::fs::write(c.dir.join("join.json"), serde_json::to_vec_pretty(&spec)?)?;
    let joined: Vec<Result<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = c.state.nodes[1..]
            .iter()
            .map(|n| {
                let spec = &spec;
                s.spawn(move || join(c, &n.name, spec))
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
