//! The node's pod CIDR through the CRI, as the kubelet hands it over: a CNI
//! configuration saying `"subnet": "usePodCidr"` leaves the network not ready (and pods
//! without a network refused, with the reason) until UpdateRuntimeConfig brings the
//! CIDR; then pods get addresses from it, also after the server restarts. A malformed
//! CIDR is refused and changes nothing. Needs root.

use skiff_fixtures as common;

use common::node::Node;
use common::*;
use skiff_runtime::cri::client::Clients;
use skiff_runtime::cri::v1;
use std::time::Duration;

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// NetworkReady from the server's Status: (ready, message).
fn network(node: &Node) -> (bool, String) {
    let sock = format!("unix://{}", node.sock().display());
    block(async move {
        let c = Clients::connect(&sock, None, Duration::from_secs(10))
            .await
            .unwrap();
        let st =
            c.rt.clone()
                .status(v1::StatusRequest::default())
                .await
                .unwrap();
        let conds = st.into_inner().status.unwrap().conditions;
        let n = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
        (n.status, n.message.clone())
    })
}

fn update(node: &Node, cidr: &str) -> Result<(), tonic::Status> {
    let sock = format!("unix://{}", node.sock().display());
    let cidr = cidr.to_string();
    block(async move {
        let c = Clients::connect(&sock, None, Duration::from_secs(10))
            .await
            .unwrap();
        c.rt.clone()
            .update_runtime_config(v1::UpdateRuntimeConfigRequest {
                runtime_config: Some(v1::RuntimeConfig {
                    network_config: Some(v1::NetworkConfig { pod_cidr: cidr }),
                }),
            })
            .await
            .map(|_| ())
    })
}

#[test]
#[ignore = "needs root"]
fn pod_cidr_from_the_kubelet_fills_the_cni_subnet() {
    require_root();
    let mut node = Node::start_in_cluster("10.201.0.0/16");
    let (ready, why) = network(&node);
    assert!(!ready);
    assert!(why.contains("pod CIDR is not known yet"), "{why}");
    // A pod now: refused, saying why.
    let cfg = node.pod_config("early");
    let o = node.ctl(&["runp", &cfg]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pod CIDR is not known yet"),
        "{o:?}"
    );
    // Garbage is refused and changes nothing.
    let e = update(&node, "10.201.3.0/99").unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(!network(&node).0);
    update(&node, "10.201.3.0/24").unwrap();
    assert_eq!(network(&node), (true, String::new()));
    // Kept across a restart of the server.
    node.kill9();
    node.spawn();
    assert!(network(&node).0);
    let pod = node.pod("web");
    let ip = node.json(&["inspectp", &pod])["status"]["network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.201.3."), "{ip}");
}
