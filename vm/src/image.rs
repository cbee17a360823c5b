//! The VM image: the host's Debian kernel plus an initramfs holding busybox, the kernel
//! modules Skiff needs (insmod order from `modprobe --show-depends`), the agent and the
//! glibc libraries it and the workspace binaries link against. The workspace itself is
//! shared over 9p, so rebuilding Skiff never rebuilds the image.

use crate::cpio;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Host programs carried into the image (with their libraries) when installed.
/// docker-registry serves a cluster's images (vm/cluster/registry.sh), etcd an HA
/// control plane's store (vm/cluster/etcd.sh).
pub const HOST_TOOLS: &[&str] = &[
    "/usr/sbin/ip",
    "/usr/sbin/bridge",
    "/usr/sbin/nft",
    "/usr/bin/docker-registry",
    "/usr/bin/etcd",
];

/// Modules loaded at boot (dependencies are added automatically); keep in step with
/// MODULES in vm/provision.sh.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "veth",
    "bridge",
    "br_netfilter",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_ct",
    "nft_numgen",
    "nft_masq",
    "nft_fib_inet",
    "nft_reject_inet",
    // The proxy's table is of family ip: its reject and fib expressions are these.
    "nft_reject_ipv4",
    "nft_fib_ipv4",
    "nf_nat",
    "nf_conntrack",
    "ip_tables",
    "iptable_nat",
    "iptable_filter",
    "xt_MASQUERADE",
    "xt_conntrack",
    "xt_comment",
    "xt_statistic",
    "xt_mark",
    "overlay",
    "vxlan",
    "tun",
];

pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The newest installed Debian kernel and its version.
pub fn find_kernel() -> Result<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .context("read /boot")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ver = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&ver)
                .is_dir()
                .then(|| (e.path(), ver))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.pop().context(
        "no /boot/vmlinuz-* with matching /lib/modules (apt-get install linux-image-amd64)",
    )
}

/// Module files in load order for `wanted`, dependencies first, each once.
pub fn module_order(kver: &str, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for m in wanted {
        let out = Command::new("modprobe")
            .args(["-S", kver, "--show-depends", m])
            .output()
            .context("run modprobe (apt-get install kmod)")?;
        if !out.status.success() {
            // Built into this kernel or absent: nothing to load.
            continue;
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("insmod ") {
                let path = PathBuf::from(rest.split_whitespace().next().unwrap_or_default());
                if seen.insert(path.clone()) {
                    order.push(path);
                }
            }
        }
    }
    Ok(order)
}

/// Shared libraries `bin` needs, from ldd (absolute paths, including the loader).
pub fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("ldd {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

/// Build (or reuse) the image in `cache`. `agent` is the skiff-vm binary run inside the VM;
/// `link_against` are binaries whose libraries must also be present (the workspace's).
pub fn build(cache: &Path, agent: &Path, link_against: &[PathBuf]) -> Result<Image> {
    let (kernel, kver) = find_kernel()?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("busybox-static is not installed")?;
    std::fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let modules = module_order(&kver, MODULES)?;
    // iproute2's ip and bridge (busybox's ip has no -batch, proto filters or fdb) and
    // nft: the node's routes, neighbours, VXLAN entries and the proxy's read-back.
    let tools: Vec<PathBuf> = HOST_TOOLS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    let mut libs = BTreeSet::new();
    for b in std::iter::once(agent.to_path_buf())
        .chain(link_against.iter().cloned())
        .chain(tools.iter().cloned())
    {
        if b.exists() {
            libs.extend(libraries(&b)?);
        }
    }
    // Rebuild only when an input changed: key on paths, sizes and mtimes.
    let mut key = format!("{}\n{}\n", kernel.display(), include_str!("init.sh").len());
    for p in modules
        .iter()
        .chain(libs.iter())
        .chain([&busybox, &agent.to_path_buf()])
        .chain(tools.iter())
    {
        let m = std::fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
        key.push_str(&format!(
            "{} {} {:?}\n",
            p.display(),
            m.len(),
            m.modified().ok()
        ));
    }
    key.push_str(include_str!("init.sh"));
    key.push_str(include_str!("inittab"));
    key.push_str(include_str!("preinit.sh"));
    key.push_str(include_str!("../provision.sh"));
    // One file per key: builds with different inputs (test clusters carrying different
    // binaries' libraries, run side by side) neither overwrite nor rebuild each other's.
    let id = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let initramfs = cache.join(format!("initramfs-{id:016x}.cpio"));
    let key_file = cache.join(format!("initramfs-{id:016x}.key"));
    if initramfs.exists()
        && std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str())
    {
        return Ok(Image { kernel, initramfs });
    }

    // A writer's own temporary file: two builds of one key at once each write theirs and
    // the last rename wins with a whole image.
    let tmp = cache.join(format!(
        "initramfs-{id:016x}.cpio.{}.tmp",
        std::process::id()
    ));
    let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut w = cpio::Writer::new(file);
    let mut dirs = BTreeSet::new();
    let mut add_dirs = |w: &mut cpio::Writer<_>, p: &Path| -> Result<()> {
        let mut cur = PathBuf::new();
        for c in p.parent().into_iter().flat_map(|p| p.components()) {
            cur.push(c);
            let s = cur.to_string_lossy().to_string();
            if s != "/" && dirs.insert(s.clone()) {
                w.dir(&s)?;
            }
        }
        Ok(())
    };
    for d in [
        "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev", "/run", "/tmp", "/var", "/usr", "/lib",
        "/lib64", "/root", "/skiff", "/mnt",
    ] {
        add_dirs(&mut w, &Path::new(d).join("x"))?;
    }
    w.file("/bin/busybox", 0o755, &std::fs::read(&busybox)?)?;
    let applets = Command::new(&busybox).arg("--list").output()?;
    for a in String::from_utf8_lossy(&applets.stdout).lines() {
        if a != "busybox" {
            w.symlink(&format!("/bin/{a}"), "busybox")?;
        }
    }
    // Ahead of busybox's applets in PATH (/sbin comes first).
    for t in &tools {
        let name = t.file_name().expect("a file name").to_string_lossy();
        w.file(&format!("/sbin/{name}"), 0o755, &std::fs::read(t)?)?;
    }
    w.file("/init", 0o755, include_str!("preinit.sh").as_bytes())?;
    w.file("/etc/rcS", 0o755, include_str!("init.sh").as_bytes())?;
    w.file(
        "/etc/skiff-provision.sh",
        0o755,
        include_str!("../provision.sh").as_bytes(),
    )?;
    w.file("/etc/inittab", 0o644, include_str!("inittab").as_bytes())?;
    w.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    w.file("/etc/group", 0o644, b"root:x:0:\n")?;
    w.file(
        "/sbin/skiff-agent",
        0o755,
        &std::fs::read(agent).with_context(|| format!("read {}", agent.display()))?,
    )?;
    for lib in &libs {
        add_dirs(&mut w, lib)?;
        // Follow symlinks: store the real file under the linked name.
        w.file(&lib.to_string_lossy(), 0o755, &std::fs::read(lib)?)?;
    }
    let mut order = String::new();
    for m in &modules {
        add_dirs(&mut w, m)?;
        w.file(&m.to_string_lossy(), 0o644, &std::fs::read(m)?)?;
        order.push_str(&format!("{}\n", m.display()));
    }
    w.file("/etc/modules.order", 0o644, order.as_bytes())?;
    w.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&tmp, &initramfs)?;
    std::fs::write(&key_file, key)?;
    if std::fs::metadata(&initramfs)?.len() == 0 {
        bail!("empty initramfs");
    }
    Ok(Image { kernel, initramfs })
}
