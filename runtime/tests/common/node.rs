//! A CRI node for tests: `skiff-runtime serve` under a private root, driven through
//! skiffctl, optionally in its own network namespace with skiff-cni.

use super::registry::build_image;
use super::{unique, wait_for};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A skiff-runtime CRI server under a private root; optionally in its own network
/// namespace (the "node") with skiff-cni configured.
pub struct Node {
    pub root: PathBuf,
    pub netns: Option<String>,
    server: Option<Child>,
}

pub fn skiff_cni() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/skiff-cni");
    assert!(
        p.exists(),
        "target/debug/skiff-cni is missing: run `cargo build --workspace --bins` first (scripts/test-all.sh does)"
    );
    p
}

impl Node {
    pub fn start(network: bool) -> Node {
        let subnet = format!("10.127.{}.0/24", std::process::id() % 200);
        Node::start_with(network.then_some(subnet.as_str()))
    }

    /// A node of a cluster whose pods are in `cluster_cidr`: its own range is the pod
    /// CIDR the kubelet hands over from its Node (`"subnet": "usePodCidr"`).
    pub fn start_in_cluster(cluster_cidr: &str) -> Node {
        Node::start_network(Some("usePodCidr"), Some(cluster_cidr))
    }

    /// A node whose pod network (if any) is `subnet`: nodes of one cluster need distinct ones.
    pub fn start_with(subnet: Option<&str>) -> Node {
        Node::start_network(subnet, None)
    }

    fn start_network(subnet: Option<&str>, cluster_cidr: Option<&str>) -> Node {
        let network = subnet.is_some();
        let root = std::env::temp_dir().join(unique("skiff-cri"));
        std::fs::create_dir_all(root.join("cni")).unwrap();
        let netns = network.then(|| {
            let name = unique("skcri");
            assert!(Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success());
            // A node's loopback is up (the streaming server listens there).
            assert!(Command::new("ip")
                .args(["-n", &name, "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success());
            let mut conf = json!({
                "cniVersion": "1.0.0", "name": "crinet", "type": "skiff-cni",
                "bridge": format!("skc{}", std::process::id() % 100000),
                "ipam": {"type": "host-local", "subnet": subnet, "dataDir": root.join("ipam")}
            });
            if let Some(c) = cluster_cidr {
                conf["clusterCidr"] = c.into();
            }
            std::fs::write(root.join("cni/10-skiff.conf"), conf.to_string()).unwrap();
            name
        });
        if !network {
            // No pod network: pods get loopback only (tests/fixtures/cni/loopback-only).
            let conf = json!({"cniVersion": "1.0.0", "name": "lo-only", "type": "loopback-only"});
            std::fs::write(root.join("cni/10-lo.conf"), conf.to_string()).unwrap();
        }
        let mut node = Node {
            root,
            netns,
            server: None,
        };
        node.spawn();
        node
    }

    pub fn sock(&self) -> PathBuf {
        self.root.join("cri.sock")
    }

    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.sock());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("server.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            // Only the network namespace changes (not `ip netns exec`, which would give
            // the server a private mount namespace and hide its mounts after a restart).
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(super::skiff_runtime_bin());
                c
            }
            None => Command::new(super::skiff_runtime_bin()),
        };
        let cni_bin = skiff_cni().parent().unwrap().to_path_buf();
        cmd.arg("--root")
            .arg(self.root.join("state"))
            .arg("serve")
            .arg("--listen")
            .arg(self.sock())
            .arg("--image-dir")
            .arg(self.root.join("images"))
            .arg("--cni-conf-dir")
            .arg(self.root.join("cni"))
            .arg("--cni-bin-dir")
            .arg(cni_bin)
            .arg("--cni-bin-dir")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures/cni"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.server = Some(cmd.spawn().unwrap());
        let sock = self.sock();
        wait_for(
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
            "CRI socket",
        );
    }

    pub fn kill9(&mut self) {
        let mut s = self.server.take().unwrap();
        let _ = s.kill(); // SIGKILL
        let _ = s.wait();
    }

    /// skiffctl as a user on the node runs it: in the node's network namespace, where
    /// the server's loopback streaming URLs lead.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(super::skiffctl_bin());
                c
            }
            None => Command::new(super::skiffctl_bin()),
        };
        c.arg("-r")
            .arg(format!("unix://{}", self.sock().display()))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "skiffctl {args:?}: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn file(&self, name: &str, v: &Value) -> String {
        let p = self.root.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        p.display().to_string()
    }

    pub fn import_busybox(&self) {
        let tar = self.root.join("busybox.tar");
        build_image(&tar, true);
        let images = self.root.join("images").display().to_string();
        let out = self.ok(&["import", tar.to_str().unwrap(), "--image-dir", &images]);
        assert!(out.contains("docker.io/skiff/busybox:latest"), "{out}");
    }

    /// runp + create + start; returns (pod id, container id).
    pub fn run(&self, pod: &str, container: &Value) -> (String, String) {
        let p = self.pod(pod);
        let c = self.container(&p, pod, container);
        (p, c)
    }

    pub fn pod_config(&self, name: &str) -> String {
        self.file(
            &format!("pod-{name}.json"),
            &json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "hostname": name,
                "log_directory": self.root.join("logs").join(name),
                "labels": {"app": name},
                "linux": {"security_context": {"namespace_options": {"pid": 1}}}
            }),
        )
    }

    pub fn pod(&self, name: &str) -> String {
        let cfg = self.pod_config(name);
        self.ok(&["runp", &cfg]).trim().to_string()
    }

    pub fn container(&self, pod_id: &str, pod: &str, c: &Value) -> String {
        let name = c["metadata"]["name"].as_str().unwrap();
        let cfile = self.file(&format!("c-{pod}-{name}.json"), c);
        let pfile = self.pod_config(pod);
        let id = self
            .ok(&["create", pod_id, &cfile, &pfile])
            .trim()
            .to_string();
        self.ok(&["start", &id]);
        id
    }

    pub fn inspect(&self, id: &str) -> Value {
        self.json(&["inspect", id])
    }

    pub fn wait_state(&self, id: &str, state: i64) -> Value {
        let mut last = Value::Null;
        wait_for(
            || {
                last = self.inspect(id);
                last["status"]["state"] == state
            },
            "container state",
        );
        last
    }

    pub fn in_node(&self, script: &str) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.netns.as_deref().unwrap(),
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.server.is_some() {
            let _ = self.ctl(&["rmp", "-f", "-a"]);
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn busybox(name: &str, script: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "image": {"image": "docker.io/skiff/busybox:latest"},
        "command": ["sh", "-c", script],
        "log_path": format!("{name}/0.log"),
        "labels": {"container": name},
    })
}

pub const CREATED: i64 = 0;
pub const RUNNING: i64 = 1;
pub const EXITED: i64 = 2;
