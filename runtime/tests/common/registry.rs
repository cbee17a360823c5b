//! A real OCI registry (Debian's docker-registry) on loopback, filled with skopeo, and
//! the busybox test image built by scripts/images/busybox-oci.sh.

use super::*;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: std::path::PathBuf,
}

impl Registry {
    pub fn start() -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
            || Command::new("skopeo").arg("--version").output().is_err()
        {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique("skiff-registry"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: 127.0.0.1:{port}\n", dir.display());
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "registry port",
        );
        Some(Registry { child, port, dir })
    }

    pub fn push(&self, archive: &Path, repo: &str, extra: &[&str]) {
        let o = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://127.0.0.1:{}/{repo}", self.port))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn build_image(out: &Path, gzip: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/images/busybox-oci.sh");
    let o = Command::new(script)
        .arg(out)
        .env("LAYER_GZIP", if gzip { "1" } else { "0" })
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
