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
    /// Host loopback ports forwarded to the API servers, one per control plane (node-1
    /// .. node-N; 1 or 3 of them); the other nodes are workers.
    pub api_ports: Vec<u16>,
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
    /// More skiff-proxy flags.
    #[serde(default)]
    pub proxy_args: String,
    /// REGISTRY=URL mirrors for the runtime (space-separated).
    #[serde(default)]
    pub mirrors: String,
}

/// Join one VM as a worker (`vm/cluster/node.sh`, what a person runs on a new machine).
pub fn join(c: &Cluster, node: &str, j: &JoinSpec) -> Result<String> {
    let n = c.node(node)?;
    let script = format!(
        "NODE={} NODE_IP={} SERVER={} TOKEN={} CA_HASH={} BIN={} IMAGES='{}' KUBELET_ARGS='{}' \
         PROXY_ARGS='{}' REGISTRY_MIRRORS='{}' sh /skiff/vm/cluster/node.sh",
        n.name,
        n.ip,
        j.server,
        j.token,
        j.ca_hash,
        j.bin_dir,
        j.images,
        j.kubelet_args,
        j.proxy_args,
        j.mirrors
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
/// cluster's state directory; with several control planes `kubeconfig-N` names node-N's
/// API server).
pub fn form(c: &Cluster, o: &FormOptions) -> Result<String> {
    let planes = o.api_ports.len();
    if planes == 0 || planes >= c.state.nodes.len() {
        bail!(
            "{planes} control plane(s) on {} node(s): at least one of each, and a worker",
            c.state.nodes.len()
        );
    }
    let cps = &c.state.nodes[..planes];
    let cp = &cps[0].name;
    let cp_ip = node_ip(0);
    let bin = &o.bin_dir;
    let data = "/var/lib/skiff/control";
    // Each control plane's host-forwarded link: found by its MAC, given the address
    // QEMU forwards to.
    for n in cps {
        run(
            c,
            &n.name,
            &format!(
                "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {FORWARD_MAC} ] && n=${{d##*/}}; done; \
                 [ -n \"$n\" ] || {{ echo no forwarded link >&2; exit 1; }}; \
                 ip addr add 10.0.2.15/24 dev $n; ip link set $n up"
            ),
        )?;
    }
    // The flags that decide the API server's certificate, for every skiff-control call
    // (the first one writes the PKI).
    let serving =
        |ip: &str| format!("--data-dir {data} --bind-address {ip} --also-bind-address 10.0.2.15");
    let mut etcd_servers = String::new();
    if planes > 1 {
        // The cluster CA made on node-1 and given to the others (kubeadm's manual
        // certificate distribution); each makes its own serving and etcd certificates.
        run(
            c,
            cp,
            &format!(
                "{bin}/skiff-control {} kubeconfig >/dev/null",
                serving(&cp_ip)
            ),
        )?;
        for f in ["ca.crt", "ca.key"] {
            let pem = run(c, cp, &format!("cat {data}/pki/{f}"))?;
            for n in &cps[1..] {
                let r = c.exec_input(
                    &n.name,
                    &[
                        "sh",
                        "-c",
                        &format!("mkdir -p {data}/pki && umask 077 && cat > {data}/pki/{f}"),
                    ],
                    &pem,
                    LONG,
                )?;
                if !r.ok() {
                    bail!("{}: write {f}: {}", n.name, r.stderr);
                }
            }
        }
        let initial: Vec<String> = cps
            .iter()
            .map(|n| format!("{}=https://{}:2380", n.name, n.ip))
            .collect();
        etcd_servers = cps
            .iter()
            .map(|n| format!("https://{}:2379", n.ip))
            .collect::<Vec<_>>()
            .join(",");
        for n in cps {
            run(
                c,
                &n.name,
                &format!(
                    "{bin}/skiff-control {} etcd-certs --name {name} --san {ip} --out /var/lib/skiff/etcd/pki && \
                     NAME={name} NODE_IP={ip} INITIAL_CLUSTER={initial} sh /skiff/vm/cluster/etcd.sh",
                    serving(&n.ip),
                    name = n.name,
                    ip = n.ip,
                    initial = initial.join(","),
                ),
            )?;
        }
    }
    let started: Vec<Result<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = cps
            .iter()
            .map(|n| {
                let script = format!(
                    "BIN={bin} NODE_IP={} ALSO_BIND=10.0.2.15 CONTROL_ARGS='{}' ETCD_SERVERS='{etcd_servers}' \
                     sh /skiff/vm/cluster/control-plane.sh",
                    n.ip, o.control_args
                );
                s.spawn(move || run(c, &n.name, &script))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("control plane thread"))
            .collect()
    });
    for r in started {
        r?;
    }
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
    // Workers know every API server and fail over between them (as k3s agents).
    let mut kubelet_args = o.kubelet_args.clone();
    let mut proxy_args = String::new();
    if planes > 1 {
        let all: Vec<String> = cps
            .iter()
            .map(|n| format!("https://{}:6443", n.ip))
            .collect();
        kubelet_args.push_str(&format!(" --api-servers {}", all.join(",")));
        proxy_args = format!("--api-servers {}", all.join(","));
    }
    let spec = JoinSpec {
        server,
        token,
        ca_hash: hash,
        bin_dir: bin.clone(),
        images: o.images.join(" "),
        kubelet_args,
        proxy_args,
        mirrors,
    };
    std::fs::write(c.dir.join("join.json"), serde_json::to_vec_pretty(&spec)?)?;
    let joined: Vec<Result<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = c.state.nodes[planes..]
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
    let mut admin = String::new();
    for (i, (n, port)) in cps.iter().zip(&o.api_ports).enumerate() {
        let kc = run(
            c,
            &n.name,
            &format!("{bin}/skiff-control --data-dir {data} kubeconfig --server https://127.0.0.1:{port}"),
        )?;
        if i == 0 {
            std::fs::write(c.dir.join("kubeconfig"), &kc)?;
            admin = kc.clone();
        }
        if planes > 1 {
            std::fs::write(c.dir.join(format!("kubeconfig-{}", i + 1)), &kc)?;
        }
    }
    Ok(admin)
}
