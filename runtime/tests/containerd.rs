//! Interop with a real caller: containerd 1.6 (apt) with its runc shim pointed at
//! skiff-runtime (`ctr run --runc-binary`, i.e. BinaryName in the runc options) runs,
//! execs into, pauses, kills and deletes a busybox container imported with `ctr image import`.

use common::*;
use skiff_fixtures as common;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

struct Containerd {
    dir: PathBuf,
    child: Child,
    ns: String,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = std::env::temp_dir().join(unique("skiff-ctrd"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            dir,
            child,
            ns: unique("skiff"),
        };
        wait_for(
            || c.dir.join("containerd.sock").exists() && c.ctr(&["version"]).status.success(),
            "containerd socket",
        );
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let base = self.dir.join(unique("out"));
        let (o, e) = (base.with_extension("o"), base.with_extension("e"));
        let status = Command::new("ctr")
            .arg("-a")
            .arg(self.dir.join("containerd.sock"))
            .args(["-n", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).unwrap())
            .stderr(std::fs::File::create(&e).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: std::fs::read(&o).unwrap(),
            stderr: std::fs::read(&e).unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?}: {}{}\ncontainerd log tail:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        log.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The runc shim's state root for our namespace: skiff-runtime keeps its state there.
    fn runtime_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.ns)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.runtime_root());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs root, containerd"]
fn containerd_runc_shim_drives_skiff_runtime() {
    require_root();
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
        || Command::new("ctr").arg("--version").output().is_err()
    {
        panic!("needs containerd and ctr (apt-get install containerd)");
    }
    let c = Containerd::start();
    let image = c.dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/images/busybox-oci.sh");
    let o = Command::new(&script).arg(&image).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.ok(&["images", "import", path_str(&image)]);
    let skiff = env!("CARGO_BIN_EXE_skiff-runtime");
    let img = "docker.io/skiff/busybox:latest";

    // Foreground run: output and exit status come back through the shim.
    let o = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        skiff,
        img,
        "fg",
        "sh",
        "-c",
        "echo hello from skiff; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        c.log_tail()
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from skiff\n");

    // Detached: the container shows up in skiff-runtime's own state under the shim's root.
    c.ok(&[
        "run",
        "-d",
        "--runc-binary",
        skiff,
        img,
        "bg",
        "sleep",
        "1000",
    ]);
    let tasks = c.ok(&["task", "ls"]);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("bg") && l.contains("RUNNING")),
        "{tasks}"
    );
    let listed = Command::new(skiff)
        .arg("--root")
        .arg(c.runtime_root())
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        v[0]["id"], "bg",
        "the shim created it with skiff-runtime: {v}"
    );
    assert_eq!(v[0]["status"], "running");

    let out = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo exec ok; cat /proc/1/cmdline",
    ]);
    assert!(out.starts_with("exec ok\nsleep"), "{out}");
    let o = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "bg",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5));

    c.ok(&["task", "pause", "bg"]);
    assert!(c.ok(&["task", "ls"]).contains("PAUSED"));
    c.ok(&["task", "resume", "bg"]);
    assert!(c.ok(&["task", "ls"]).contains("RUNNING"));

    c.ok(&["task", "kill", "-s", "SIGKILL", "bg"]);
    wait_for(|| c.ok(&["task", "ls"]).contains("STOPPED"), "task stopped");
    c.ok(&["task", "delete", "bg"]);
    c.ok(&["container", "delete", "bg"]);
    let listed = Command::new(skiff)
        .arg("--root")
        .arg(c.runtime_root())
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "",
        "delete went through skiff-runtime"
    );
}
