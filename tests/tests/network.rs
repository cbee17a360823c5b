//! The private network between VMs: nodes reach each other, and a container with its
//! own network namespace and a veth on node-1 reaches node-2 (routed through node-1).

use skiff_tests::*;

#[test]
#[ignore = "needs a VM (QEMU)"]
fn nodes_reach_each_other() {
    if let Some(why) = unavailable() {
        panic!("needs a VM: {why}");
    }
    let vm = cluster();
    let ip2 = vm.ip("node-2");
    let ip1 = vm.ip("node-1");
    vm.sh_ok("node-1", &format!("ping -c 2 -W 3 {ip2}"));
    vm.sh_ok("node-2", &format!("ping -c 2 -W 3 {ip1}"));
    // TCP too: a one-shot server on node-2, a client on node-1.
    vm.sh_ok(
        "node-2",
        "(echo hello-from-node-2 | nc -l -p 7070 >/dev/null 2>&1 &) ; sleep 0.5",
    );
    let got = vm.sh_ok("node-1", &format!("nc {ip2} 7070 </dev/null"));
    assert_eq!(got.trim(), "hello-from-node-2");
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn container_veth_reaches_other_node() {
    if let Some(why) = unavailable() {
        panic!("needs a VM: {why}");
    }
    let vm = cluster();
    let ip1 = vm.ip("node-1");
    let ip2 = vm.ip("node-2");
    // The container has no CAP_NET_ADMIN (default capabilities): its interface is set up
    // from the node with nsenter, as a CNI plugin would.
    let mut cfg = config(&["sleep", "1000"]);
    cfg["process"]["capabilities"]["effective"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c != "CAP_NET_ADMIN");
    let script = format!(
        "{}\n{RUNTIME} delete -f netc 2>/dev/null; {RUNTIME} run -d -b $B netc; \
         P=$({RUNTIME} state netc | grep '\"pid\"' | tr -dc 0-9); \
         set -e; ip link del vh0 2>/dev/null || true; ip link add vh0 type veth peer name vc0; \
         PEER=$(ip -o link show vh0 | sed -n 's/.*vh0@\\([^:]*\\):.*/\\1/p'); \
         [ \"$PEER\" = vc0 ] || ip link set \"$PEER\" name vc0; \
         ip link set vc0 netns $P; \
         ip addr add 10.98.1.1/24 dev vh0; ip link set vh0 up; \
         nsenter -t $P -n sh -c 'set -e; ip link set vc0 name eth0; ip addr add 10.98.1.2/24 dev eth0; ip link set eth0 up; ip route add default via 10.98.1.1'; \
         echo 1 > /proc/sys/net/ipv4/ip_forward",
        bundle_script("/tmp/t-net", &cfg)
    );
    vm.sh_ok("node-1", &script);
    vm.sh_ok(
        "node-2",
        &format!("ip route replace 10.98.1.0/24 via {ip1}"),
    );
    let out = vm.sh_ok(
        "node-1",
        &format!("{RUNTIME} exec netc ping -c 2 -W 3 {ip2}"),
    );
    assert!(out.contains("2 packets received"), "{out}");
    // The container has its own network namespace: node-1's address is not local in it.
    let addrs = vm.sh_ok("node-1", &format!("{RUNTIME} exec netc ip -4 addr"));
    assert!(
        addrs.contains("10.98.1.2") && !addrs.contains(&ip1),
        "{addrs}"
    );
    vm.sh_ok(
        "node-1",
        &format!("{RUNTIME} delete -f netc; ip link del vh0 2>/dev/null; true"),
    );
}
