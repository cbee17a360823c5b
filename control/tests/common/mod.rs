//! The API server on a loopback port for kubectl tests, stopped on drop.
#![allow(dead_code)]

pub mod etcd;

use skiff_control::store::Store;
use std::path::{Path, PathBuf};

/// Where a test cluster's state lives: the embedded store in a fresh directory, or a
/// one-member etcd the test starts. Removed on drop.
pub enum Backend {
    Embedded(PathBuf),
    Etcd(etcd::EtcdCluster),
}

impl Backend {
    pub fn embedded(name: &str) -> Backend {
        let dir = std::env::temp_dir().join(format!("skiff-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Backend::Embedded(dir)
    }

    /// A one-member etcd; the tests using it are `#[ignore = "needs ... etcd"]`, so a
    /// missing etcd fails them rather than passing them.
    pub fn etcd(name: &str) -> Backend {
        etcd::EtcdCluster::start(name, 1)
            .map(Backend::Etcd)
            .expect("needs etcd (apt-get install etcd-server)")
    }

    /// A store on this backend (each call a new client; the state is shared).
    pub fn store(&self) -> Store {
        match self {
            Backend::Embedded(dir) => Store::open(dir).unwrap(),
            Backend::Etcd(c) => Store::etcd(&c.endpoints, None).unwrap(),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Embedded(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
use std::process::{Command, Output, Stdio};

pub struct Server {
    pub addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serve the API for `store` (controllers, if any, are the caller's to start).
    pub fn serve(store: Store) -> Server {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap().to_string()).unwrap();
                axum::serve(l, skiff_control::apiserver::router(store))
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        });
        Server {
            addr: addr_rx.recv().unwrap(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Server {
    /// Serve a store opened at `dir`.
    pub fn start(dir: &std::path::Path) -> Server {
        Server::serve(Store::open(dir).unwrap())
    }

    /// Run a kubectl binary against this server (no kubeconfig), optionally with stdin.
    pub fn kubectl(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(bin);
        c.arg("--server")
            .arg(format!("http://{}", self.addr))
            .args(args)
            .env("KUBECONFIG", "/dev/null")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("run kubectl");
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One plain HTTP/1.0 request to `addr`: the status code (0 if the connection failed)
/// and the body.
#[allow(dead_code)]
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = match std::net::TcpStream::connect(addr) {
        Ok(c) => c,
        Err(e) => return (0, format!("connect: {e}")),
    };
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = c.write_all(req.as_bytes()) {
        return (0, format!("write: {e}"));
    }
    let mut text = String::new();
    if let Err(e) = c.read_to_string(&mut text) {
        return (0, format!("read: {e}"));
    }
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}
