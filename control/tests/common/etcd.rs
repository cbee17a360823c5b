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
    /// Live members (None: killed).
    members: Vec<Option<Child>>,
    /// Each member's command line, to start it again.
    args: Vec<Vec<String>>,
    pub endpoints: Vec<String>,
    pub dir: PathBuf,
}

/// Certificates for an etcd served over TLS with client-certificate authentication:
/// the CA, the member's serving pair, and a client pair the CA signed.
pub struct EtcdPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdCluster {
    /// Freeze (SIGSTOP) or thaw (SIGCONT) member `i`: frozen, it accepts no request.
    pub fn freeze(&self, i: usize, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let pid = self.members[i].as_ref().expect("member is running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        let mut m = self.members[i].take().expect("member is running");
        let _ = m.kill();
        let _ = m.wait();
    }

    /// Start member `i` again on its data (after `kill`).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} is running");
        self.members[i] = Some(spawn(&self.dir, i, &self.args[i]));
    }

    /// The member that leads now, as the live members report it.
    pub fn leader(&self) -> Option<usize> {
        let status: Vec<(usize, String, String)> = (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .filter_map(|i| {
                let v = gateway(&self.endpoints[i], "/v3/maintenance/status")?;
                Some((
                    i,
                    v["header"]["member_id"].as_str()?.to_string(),
                    v["leader"].as_str()?.to_string(),
                ))
            })
            .collect();
        let leader = status.first().map(|(_, _, l)| l.clone())?;
        status
            .iter()
            .find(|(_, id, _)| *id == leader)
            .map(|(i, _, _)| *i)
    }

    /// A cluster of `size` members on loopback ports, or None without etcd installed.
    pub fn start(name: &str, size: usize) -> Option<EtcdCluster> {
        EtcdCluster::start_with(name, size, None, None)
    }

    /// One member serving clients over TLS and requiring client certificates.
    pub fn start_tls(name: &str, pki: &EtcdPki) -> Option<EtcdCluster> {
        EtcdCluster::start_with(name, 1, Some(pki), None)
    }

    /// Members whose clients and peers all speak TLS with client certificates, each with
    /// its own certificates in `member_dirs[i]` (`skiff-control etcd-certs`: ca.crt,
    /// server.*, peer.*), checked ready with the API server's client pair there.
    pub fn start_secure(name: &str, member_dirs: &[PathBuf]) -> Option<EtcdCluster> {
        let d = &member_dirs[0];
        let pki = EtcdPki {
            ca: d.join("ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("apiserver-etcd-client.crt"),
            client_key: d.join("apiserver-etcd-client.key"),
        };
        EtcdCluster::start_with(name, member_dirs.len(), Some(&pki), Some(member_dirs))
    }

    fn start_with(
        name: &str,
        size: usize,
        tls: Option<&EtcdPki>,
        members: Option<&[PathBuf]>,
    ) -> Option<EtcdCluster> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("skiff-etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let peer_scheme = if members.is_some() { "https" } else { "http" };
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}={peer_scheme}://127.0.0.1:{peer}"))
            .collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("{scheme}://127.0.0.1:{c}"))
            .collect();
        let mut args = Vec::new();
        for (i, (_, peer)) in ports.iter().enumerate() {
            let mut a: Vec<String> = vec![
                "--name".into(),
                format!("m{i}"),
                "--data-dir".into(),
                dir.join(format!("m{i}")).display().to_string(),
                "--listen-client-urls".into(),
                endpoints[i].clone(),
                "--advertise-client-urls".into(),
                endpoints[i].clone(),
                "--listen-peer-urls".into(),
                format!("{peer_scheme}://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("{peer_scheme}://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                name.into(),
            ];
            if let Some(d) = members.map(|m| &m[i]) {
                for (flag, file) in [
                    ("--cert-file", "server.crt"),
                    ("--key-file", "server.key"),
                    ("--trusted-ca-file", "ca.crt"),
                    ("--peer-cert-file", "peer.crt"),
                    ("--peer-key-file", "peer.key"),
                    ("--peer-trusted-ca-file", "ca.crt"),
                ] {
                    a.push(flag.into());
                    a.push(d.join(file).display().to_string());
                }
                a.push("--client-cert-auth".into());
                a.push("--peer-client-cert-auth".into());
            } else if let Some(p) = tls {
                for (flag, path) in [
                    ("--cert-file", &p.server_cert),
                    ("--key-file", &p.server_key),
                    ("--trusted-ca-file", &p.ca),
                ] {
                    a.push(flag.into());
                    a.push(path.display().to_string());
                }
                a.push("--client-cert-auth".into());
            }
            args.push(a);
        }
        let members = (0..size).map(|i| Some(spawn(&dir, i, &args[i]))).collect();
        let cluster = EtcdCluster {
            members,
            args,
            endpoints,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(30);
        let store_tls = tls.map(|p| skiff_control::store::EtcdTls {
            ca: Some(p.ca.clone()),
            cert: Some(p.client_cert.clone()),
            key: Some(p.client_key.clone()),
        });
        while Store::etcd(&cluster.endpoints, store_tls.as_ref()).is_err() {
            assert!(
                Instant::now() < end,
                "etcd cluster did not come up (logs in {})",
                cluster.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(cluster)
    }
}

fn spawn(dir: &std::path::Path, i: usize, args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("m{i}.log")))
        .unwrap();
    Command::new("etcd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// POST {} to etcd's JSON gateway (plain-HTTP members only).
fn gateway(endpoint: &str, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let addr = endpoint.strip_prefix("http://")?;
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().flatten() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
