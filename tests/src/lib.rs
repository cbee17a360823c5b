//! Fixtures for VM tests: one shared two-node cluster per test run, the workspace's
//! binaries reached over 9p at /skiff, and helpers that fail with the VM console tail.

use skiff_vm::{Cluster, Response, UpOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CLUSTER: &str = "skiff-test";
pub const NODES: usize = 2;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of a workspace binary (debug build, as `cargo build --workspace --bins` makes it).
pub fn binary(name: &str) -> PathBuf {
    let p = workspace().join("target/debug").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test-all.sh does)",
        p.display()
    );
    p
}

/// Why VM tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix_is_root() {
        return Some("needs root".into());
    }
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        );
    }
    if skiff_vm::image::find_kernel().is_err() {
        return Some("no Debian kernel in /boot (apt-get install linux-image-amd64)".into());
    }
    None
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The shared cluster, booted on first use by whichever test gets there first.
pub fn cluster() -> Vm {
    let opts = UpOptions {
        name: CLUSTER.into(),
        nodes: NODES,
        memory_mb: 512,
        cpus: 1,
        workspace: workspace(),
        agent_bin: binary("skiff-vm"),
        link_against: vec![binary("skiff-runtime")],
        accel: std::env::var("SKIFF_VM_ACCEL").unwrap_or_else(|_| "auto".into()),
        api_forwards: Vec::new(),
        registry_forward: None,
    };
    Vm {
        c: Cluster::shared(&opts).expect("boot the test cluster"),
    }
}

pub struct Vm {
    pub c: Cluster,
}

impl Vm {
    /// Run a script on `node`; on failure the panic shows output and the console tail.
    pub fn sh(&self, node: &str, script: &str) -> Response {
        self.c
            .exec(node, &["sh", "-c", script], Duration::from_secs(300))
            .unwrap_or_else(|e| {
                panic!("{node}: {e:#}\nconsole:\n{}", self.c.console_tail(node, 30))
            })
    }

    pub fn sh_ok(&self, node: &str, script: &str) -> String {
        let r = self.sh(node, script);
        assert!(
            r.ok(),
            "{node}: exit {}\nstdout:\n{}\nstderr:\n{}\nconsole:\n{}",
            r.code,
            r.stdout,
            r.stderr,
            self.c.console_tail(node, 30)
        );
        r.stdout
    }

    pub fn ip(&self, node: &str) -> String {
        self.c.node(node).unwrap().ip.clone()
    }
}

/// Shell that creates a busybox bundle at `dir` inside a VM with `config` as config.json.
pub fn bundle_script(dir: &str, config: &serde_json::Value) -> String {
    format!(
        "set -e; B={dir}; rm -rf $B; mkdir -p $B/rootfs/bin $B/rootfs/proc $B/rootfs/sys $B/rootfs/dev $B/rootfs/tmp $B/rootfs/etc; \
         cp /bin/busybox $B/rootfs/bin/; for a in $(/bin/busybox --list); do [ $a = busybox ] || ln -s busybox $B/rootfs/bin/$a; done; \
         cat > $B/config.json <<'CONFIG'\n{}\nCONFIG\nset +e\n",
        serde_json::to_string_pretty(config).unwrap()
    )
}

/// A default container config (what `skiff-runtime spec` writes) running `args`.
pub fn config(args: &[&str]) -> serde_json::Value {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("skiff-spec-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let o = std::process::Command::new(binary("skiff-runtime"))
        .arg("spec")
        .arg("--bundle")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    v["process"]["terminal"] = serde_json::Value::Bool(false);
    v["process"]["args"] = serde_json::json!(args);
    v
}

/// The runtime binary as seen inside the VMs.
pub const RUNTIME: &str = "/skiff/target/debug/skiff-runtime";
