//! Real etcd (Debian's etcd-server) for tests: a cluster on loopback ports the test
//! starts, with its data in a temporary directory, stopped and removed on drop.

use skiff_control::store::Store;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct EtcdCluster {
    members: Vec<Child>,
    pub endpoints: Vec<String>,
    pub dir: PathBuf,
}

impl EtcdCluster {
    /// Freeze (SIGSTOP) or thaw (SIGCONT) member `i`: frozen, it accepts no request.
    #[allow(dead_code)]
    pub fn freeze(&self, i: usize, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &self.members[i].id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// A cluster of `size` members on loopback ports, or None without etcd installed.
    pub fn start(name: &str, size: usize) -> Option<EtcdCluster> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("skiff-etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("m{i}.log")))
                .or_else(|_| {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::File::create(dir.join(format!("m{i}.log")))
                })
                .unwrap();
            members.push(
                Command::new("etcd")
                    .args(["--name", &format!("m{i}")])
                    .arg("--data-dir")
                    .arg(dir.join(format!("m{i}")))
                    .args([
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ])
                    .args([
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                    .args([
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                    ])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args([
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        name,
                    ])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if Store::etcd(&endpoints).is_ok() {
                break;
            }
            assert!(
                Instant::now() < end,
                "etcd cluster did not come up (logs in {})",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(EtcdCluster {
            members,
            endpoints,
            dir,
        })
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
