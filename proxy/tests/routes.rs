//! The host-gw pod network in the kernel: two "nodes" (network namespaces on one
//! bridge), each with a pod address of its pod CIDR (on its loopback). Routes made from
//! the Node objects let each reach the other's pod; a node that leaves loses its route;
//! a route deleted or changed behind our back comes back; routes that are not ours
//! stay. Needs root, ip and busybox.

mod common;

use k8s_openapi::api::core::v1::Node;
use skiff_proxy::routes::{self, desired, reconcile};
use std::process::Command;
use std::sync::Arc;

fn require() {
    common::require(&["ip", "busybox"]);
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().unwrap()
}

fn ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A switch namespace with a bridge, and two node namespaces on it.
struct Lab {
    tag: String,
}

impl Lab {
    fn new() -> Lab {
        let tag = format!("{}", std::process::id() % 100000);
        let lab = Lab { tag: tag.clone() };
        ok(&format!(
            "ip netns add rsw{tag} && ip -n rsw{tag} link add br0 type bridge && ip -n rsw{tag} link set br0 up"
        ));
        for (i, n) in ["a", "b"].iter().enumerate() {
            let (ns, k) = (format!("rn{n}{tag}"), i + 1);
            ok(&format!(
                "ip netns add {ns} && ip -n {ns} link set lo up && \
                 ip link add eth0 netns {ns} type veth peer name p{n} netns rsw{tag} && \
                 ip -n rsw{tag} link set p{n} master br0 && ip -n rsw{tag} link set p{n} up && \
                 ip -n {ns} addr add 192.168.77.{k}/24 dev eth0 && ip -n {ns} link set eth0 up && \
                 ip -n {ns} addr add 10.244.{k}.1/32 dev lo && \
                 ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1"
            ));
        }
        lab
    }

    fn ns(&self, n: &str) -> String {
        format!("rn{n}{}", self.tag)
    }

    /// Reconcile node `n`'s routes from these Nodes, inside its namespace.
    fn reconcile(&self, n: &str, nodes: &[Arc<Node>]) -> usize {
        let wanted = desired(nodes, n);
        common::in_netns(&self.ns(n), move || reconcile(&wanted).unwrap())
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        sh(&format!(
            "ip netns exec {} timeout 5 busybox ping -c 1 -W 2 {to}",
            self.ns(from)
        ))
        .status
        .success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [self.ns("a"), self.ns("b"), format!("rsw{}", self.tag)] {
            let _ = sh(&format!("ip netns del {ns}"));
        }
    }
}

fn node(name: &str, cidr: &str, ip: &str) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
        }))
        .unwrap(),
    )
}

#[test]
#[ignore = "needs root, ip and busybox"]
fn host_gw_routes_follow_the_nodes() {
    require();
    let lab = Lab::new();
    let nodes = vec![
        node("a", "10.244.1.0/24", "192.168.77.1"),
        node("b", "10.244.2.0/24", "192.168.77.2"),
    ];
    assert!(!lab.ping("a", "10.244.2.1"), "no route yet");
    // Someone else's route stays whatever we do.
    ok(&format!(
        "ip -n {} route add 10.99.0.0/16 via 192.168.77.2",
        lab.ns("a")
    ));
    assert_eq!(lab.reconcile("a", &nodes), 1);
    assert_eq!(lab.reconcile("b", &nodes), 1);
    assert!(lab.ping("a", "10.244.2.1"), "a reaches b's pod");
    assert!(lab.ping("b", "10.244.1.1"), "b reaches a's pod");
    assert_eq!(lab.reconcile("a", &nodes), 0, "nothing to change");
    let show = format!(
        "ip -n {} -4 route show proto {}",
        lab.ns("a"),
        routes::PROTO
    );
    assert_eq!(ok(&show).trim(), "10.244.2.0/24 via 192.168.77.2 dev eth0");
    // Changed and deleted behind our back: put back.
    ok(&format!(
        "ip -n {} route replace 10.244.2.0/24 via 192.168.77.9 proto {}",
        lab.ns("a"),
        routes::PROTO
    ));
    assert_eq!(lab.reconcile("a", &nodes), 1);
    assert!(lab.ping("a", "10.244.2.1"));
    ok(&format!("ip -n {} route del 10.244.2.0/24", lab.ns("a")));
    assert_eq!(lab.reconcile("a", &nodes), 1);
    assert!(lab.ping("a", "10.244.2.1"));
    // Node b leaves: its route goes; the foreign route stays.
    assert_eq!(lab.reconcile("a", &nodes[..1]), 1);
    assert_eq!(ok(&show).trim(), "");
    assert!(!lab.ping("a", "10.244.2.1"));
    assert!(ok(&format!("ip -n {} route", lab.ns("a"))).contains("10.99.0.0/16 via 192.168.77.2"));
}

/// Two "nodes" on different subnets with a router between them: no shared link, so
/// host-gw cannot route their pods; vxlan can.
struct RoutedLab {
    tag: String,
}

impl RoutedLab {
    fn new() -> RoutedLab {
        let tag = format!("{}", std::process::id() % 100000);
        let lab = RoutedLab { tag: tag.clone() };
        ok(&format!(
            "ip netns add vr{tag} && ip netns exec vr{tag} sysctl -qw net.ipv4.ip_forward=1"
        ));
        for (n, net, k) in [("a", 77, 1), ("b", 78, 2)] {
            let ns = format!("vn{n}{tag}");
            ok(&format!(
                "ip netns add {ns} && ip -n {ns} link set lo up && \
                 ip link add eth0 netns {ns} type veth peer name to{n} netns vr{tag} && \
                 ip -n vr{tag} addr add 192.168.{net}.254/24 dev to{n} && ip -n vr{tag} link set to{n} up && \
                 ip -n {ns} addr add 192.168.{net}.{k}/24 dev eth0 && ip -n {ns} link set eth0 up && \
                 ip -n {ns} route add default via 192.168.{net}.254 && \
                 ip -n {ns} addr add 10.244.{k}.1/32 dev lo"
            ));
        }
        lab
    }

    fn ns(&self, n: &str) -> String {
        format!("vn{n}{}", self.tag)
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        sh(&format!(
            "ip netns exec {} timeout 5 busybox ping -c 1 -W 2 {to}",
            self.ns(from)
        ))
        .status
        .success()
    }
}

impl Drop for RoutedLab {
    fn drop(&mut self) {
        for ns in [self.ns("a"), self.ns("b"), format!("vr{}", self.tag)] {
            let _ = sh(&format!("ip netns del {ns}"));
        }
    }
}

#[test]
#[ignore = "needs root, ip, bridge and busybox"]
fn vxlan_connects_pods_of_nodes_without_a_shared_link() {
    common::require(&["ip", "bridge", "busybox"]);
    use skiff_proxy::vxlan;
    let lab = RoutedLab::new();
    let nodes = vec![
        node("a", "10.244.1.0/24", "192.168.77.1"),
        node("b", "10.244.2.0/24", "192.168.78.2"),
    ];
    let run = |n: &str, nodes: &[Arc<Node>]| {
        let wanted = vxlan::desired(nodes, n);
        common::in_netns(&lab.ns(n), move || vxlan::reconcile(&wanted))
    };
    // The nodes reach each other, their pods do not; host-gw cannot help here.
    assert!(lab.ping("a", "192.168.78.2"));
    assert!(!lab.ping("a", "10.244.2.1"));
    let hostgw = desired(&nodes, "a");
    let refused = common::in_netns(&lab.ns("a"), move || reconcile(&hostgw));
    assert!(refused.is_err(), "host-gw through a router: {refused:?}");

    assert!(run("a", &nodes).unwrap() > 0);
    assert!(run("b", &nodes).unwrap() > 0);
    assert!(
        lab.ping("a", "10.244.2.1"),
        "a reaches b's pod through VXLAN"
    );
    assert!(lab.ping("b", "10.244.1.1"), "b reaches a's pod");
    assert_eq!(run("a", &nodes).unwrap(), 0, "nothing to change");
    let fdb = ok(&format!(
        "ip netns exec {} bridge fdb show dev skiff-vxlan",
        lab.ns("a")
    ));
    assert!(fdb.contains("0e:5f:c0:a8:4e:02 dst 192.168.78.2"), "{fdb}");
    // Entries removed behind our back come back.
    ok(&format!(
        "ip -n {} neigh del 10.244.2.0 dev skiff-vxlan",
        lab.ns("a")
    ));
    ok(&format!(
        "ip netns exec {} bridge fdb del 0e:5f:c0:a8:4e:02 dev skiff-vxlan dst 192.168.78.2",
        lab.ns("a")
    ));
    assert!(!lab.ping("a", "10.244.2.1"));
    assert!(run("a", &nodes).unwrap() >= 2);
    assert!(lab.ping("a", "10.244.2.1"));
    // Node b leaves: its route, neighbour and forwarding entry go.
    assert!(run("a", &nodes[..1]).unwrap() >= 3);
    assert!(!lab.ping("a", "10.244.2.1"));
    let show = ok(&format!("ip -n {} -4 route show proto 83", lab.ns("a")));
    assert_eq!(show.trim(), "");
    let fdb = ok(&format!(
        "ip netns exec {} bridge fdb show dev skiff-vxlan",
        lab.ns("a")
    ));
    assert!(!fdb.contains("0e:5f:c0:a8:4e:02"), "{fdb}");
}
