//! The rules in the kernel, both modes: a node network namespace routing to two "pods"
//! (namespaces with a busybox httpd each); a Service's ClusterIP and NodePort reach both
//! endpoints, from the node and from a pod (hairpin included), follow endpoint changes,
//! and a Service without endpoints refuses connections. Needs root, nft and iptables.

mod common;

use skiff_proxy::apply::{cleanup, Applier, Mode};
use skiff_proxy::{Options, Protocol, ServicePort};
use std::process::{Child, Command, Stdio};

fn sh(cmd: &str) {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A node namespace and two pod namespaces on their own links, each pod serving its name.
struct Net {
    node: String,
    pods: Vec<String>,
    servers: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Net {
    fn new(tag: &str) -> Net {
        let id = format!("{}{}", tag, std::process::id() % 100000);
        let node = format!("pxn{id}");
        let dir = std::env::temp_dir().join(format!("skiff-proxy-{id}"));
        sh(&format!("ip netns add {node} && ip -n {node} link set lo up && ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1"));
        let mut net = Net {
            node: node.clone(),
            pods: Vec::new(),
            servers: Vec::new(),
            dir: dir.clone(),
        };
        for (i, name) in ["a", "b"].iter().enumerate() {
            let pod = format!("px{name}{id}");
            let n = i + 1;
            sh(&format!(
                "ip netns add {pod} && ip -n {pod} link set lo up && \
                 ip link add v{name}{id} netns {node} type veth peer name eth0 netns {pod} && \
                 ip -n {node} addr add 10.200.{n}.1/24 dev v{name}{id} && ip -n {node} link set v{name}{id} up && \
                 ip -n {pod} addr add 10.200.{n}.2/24 dev eth0 && ip -n {pod} link set eth0 up && \
                 ip -n {pod} route add default via 10.200.{n}.1"
            ));
            let www = dir.join(name);
            std::fs::create_dir_all(&www).unwrap();
            std::fs::write(www.join("index.html"), format!("{name}\n")).unwrap();
            let child = Command::new("ip")
                .args([
                    "netns", "exec", &pod, "busybox", "httpd", "-f", "-p", "8080", "-h",
                ])
                .arg(&www)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            net.servers.push(child);
            if i == 0 {
                // A node has a route for the service range (its default route, usually).
                sh(&format!(
                    "ip -n {node} route add 10.96.0.0/12 dev v{name}{id}"
                ));
            }
            net.pods.push(pod);
        }
        // The servers are up when the node reaches them.
        for n in 1..=2 {
            for _ in 0..100 {
                if net
                    .get(&net.node, &format!("http://10.200.{n}.2:8080/"))
                    .is_ok()
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        net
    }

    /// wget from a namespace: the body, or the error text.
    fn get(&self, ns: &str, url: &str) -> Result<String, String> {
        let o = Command::new("ip")
            // busybox 1.35's wget crashes with -T: a timeout(1) bounds it instead.
            .args([
                "netns", "exec", ns, "timeout", "5", "busybox", "wget", "-qO-", url,
            ])
            .output()
            .unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }

    /// Run `f` on a thread inside the node namespace (its child processes, nft and
    /// iptables, run there too).
    fn in_node<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        common::in_netns(&self.node, f)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.pods.iter().chain([&self.node]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn service(endpoints: &[(&str, u16)]) -> Vec<ServicePort> {
    vec![
        ServicePort {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Some("10.96.0.10".parse().unwrap()),
            external_ips: Vec::new(),
            port: 80,
            node_port: Some(30080),
            affinity_seconds: None,
            local_endpoints: Vec::new(),
            external_local: false,
            internal_local: false,
            endpoints: endpoints
                .iter()
                .map(|(a, p)| (a.parse().unwrap(), *p))
                .collect(),
        },
        ServicePort {
            namespace: "default".into(),
            name: "empty".into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            cluster_ip: Some("10.96.0.11".parse().unwrap()),
            external_ips: Vec::new(),
            port: 80,
            node_port: None,
            affinity_seconds: None,
            local_endpoints: Vec::new(),
            external_local: false,
            internal_local: false,
            endpoints: Vec::new(),
        },
    ]
}

fn require() {
    common::require(&["nft", "iptables-restore", "busybox"]);
}

fn check_mode(mode: Mode, tag: &str) {
    let net = Net::new(tag);
    let opts = Options {
        cluster_cidr: Some("10.200.0.0/16".into()),
        ..Options::default()
    };
    let o = opts.clone();
    let mut applier = net.in_node(move || {
        let mut a = Applier::new(mode, o);
        assert!(a
            .sync(&service(&[("10.200.1.2", 8080), ("10.200.2.2", 8080)]))
            .unwrap()
            .changed());
        // The same rules again: nothing to do.
        assert!(!a
            .sync(&service(&[("10.200.1.2", 8080), ("10.200.2.2", 8080)]))
            .unwrap()
            .changed());
        a
    });
    // From the node (OUTPUT) and from pod a (PREROUTING; sometimes to itself: hairpin).
    for from in [net.node.as_str(), net.pods[0].as_str()] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let r = net.get(from, "http://10.96.0.10/");
            seen.insert(r.unwrap_or_else(|e| panic!("{mode:?} from {from}: {e:?}")));
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["a", "b"],
            "{mode:?} from {from}"
        );
    }
    // NodePort on the node's address, from a pod.
    let body = net.get(&net.pods[1], "http://10.200.2.1:30080/").unwrap();
    assert!(body == "a" || body == "b", "{body}");
    // No endpoints: refused at once, not a timeout.
    let e = net.get(&net.node, "http://10.96.0.11/").unwrap_err();
    assert!(e.contains("refused"), "{mode:?}: {e}");
    // sessionAffinity ClientIP: each client keeps its endpoint.
    applier = net.in_node(move || {
        let mut ports = service(&[("10.200.1.2", 8080), ("10.200.2.2", 8080)]);
        ports[0].affinity_seconds = Some(60);
        assert!(applier.sync(&ports).unwrap().changed());
        applier
    });
    for from in [net.node.as_str(), net.pods[1].as_str()] {
        let first = net.get(from, "http://10.96.0.10/").unwrap();
        for _ in 0..15 {
            assert_eq!(
                net.get(from, "http://10.96.0.10/").unwrap(),
                first,
                "{mode:?} affinity from {from}"
            );
        }
    }
    // externalTrafficPolicy Local: NodePort traffic only to this node's endpoint (a);
    // internalTrafficPolicy Local likewise for the ClusterIP; no local endpoint: dropped.
    applier = net.in_node(move || {
        let mut ports = service(&[("10.200.1.2", 8080), ("10.200.2.2", 8080)]);
        ports[0].local_endpoints = vec![("10.200.1.2".parse().unwrap(), 8080)];
        ports[0].external_local = true;
        ports[0].internal_local = true;
        assert!(applier.sync(&ports).unwrap().changed());
        applier
    });
    for _ in 0..12 {
        assert_eq!(
            net.get(&net.pods[1], "http://10.200.2.1:30080/").unwrap(),
            "a",
            "{mode:?} NodePort Local"
        );
        assert_eq!(
            net.get(&net.node, "http://10.96.0.10/").unwrap(),
            "a",
            "{mode:?} ClusterIP Local"
        );
    }
    applier = net.in_node(move || {
        let mut ports = service(&[("10.200.1.2", 8080), ("10.200.2.2", 8080)]);
        ports[0].external_local = true;
        assert!(applier.sync(&ports).unwrap().changed());
        applier
    });
    assert!(
        net.get(&net.pods[1], "http://10.200.2.1:30080/").is_err(),
        "{mode:?}: no local endpoint, dropped"
    );
    // One endpoint left: only it answers.
    applier = net.in_node(move || {
        assert!(applier
            .sync(&service(&[("10.200.2.2", 8080)]))
            .unwrap()
            .changed());
        applier
    });
    for _ in 0..10 {
        assert_eq!(net.get(&net.node, "http://10.96.0.10/").unwrap(), "b");
    }
    // Cleanup leaves nothing that catches service traffic.
    let o = opts.clone();
    net.in_node(move || {
        drop(applier);
        cleanup(mode, &o).unwrap();
    });
    assert!(net.get(&net.node, "http://10.96.0.10/").is_err());
}

#[test]
#[ignore = "needs root, nft, iptables and busybox"]
fn nftables_mode_routes_services() {
    require();
    check_mode(Mode::Nftables, "n");
}

#[test]
#[ignore = "needs root, nft, iptables and busybox"]
fn iptables_mode_routes_services() {
    require();
    check_mode(Mode::Iptables, "i");
}
