//! The cluster DNS server over the wire, on loopback: questions sent as a resolver
//! sends them (UDP, and TCP as a resolver retries a truncated answer) get the answers
//! Kubernetes' DNS specification defines; a name outside the cluster is relayed to an
//! upstream server (here a second instance answering another domain); a changed zone
//! is answered at once; an upstream that does not answer is SERVFAIL, not a hang or
//! NXDOMAIN.

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_proxy::dns::server::{serve, Handler, Shared};
use skiff_proxy::dns::zone::Zone;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn zone(domain: &str, services: serde_json::Value, slices: serde_json::Value) -> Arc<Zone> {
    let services: Vec<Arc<Service>> = serde_json::from_value::<Vec<Service>>(services)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let slices: Vec<Arc<EndpointSlice>> = serde_json::from_value::<Vec<EndpointSlice>>(slices)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    Arc::new(Zone::build(&services, &slices, domain))
}

fn question(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn ask_udp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(&question(name, t), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("an answer");
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 4242);
    m
}

fn ask_tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut c = std::net::TcpStream::connect(server).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let q = question(name, t);
    c.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    c.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn texts(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

#[test]
fn cluster_names_are_answered_and_the_rest_relayed_upstream() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // An upstream that takes queries and never answers. Held bound for the whole test: a
    // port merely found free could become the test client's own ephemeral port, which
    // then received the relayed query as if it were the answer.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let upstream = zone(
        "upstream.test",
        json!([{"metadata": {"name": "www", "namespace": "corp"}, "spec": {"clusterIP": "192.0.2.80"}}]),
        json!([]),
    );
    let cluster: Shared = Arc::new(RwLock::new(zone(
        "cluster.local",
        json!([
            {"metadata": {"name": "web", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.3.4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None"}}
        ]),
        json!([{"metadata": {"name": "db-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0"},
                              {"addresses": ["10.244.2.6"], "conditions": {"ready": true}}]}]),
    )));
    rt.block_on(async {
        serve(
            up_addr,
            Handler {
                zone: Arc::new(RwLock::new(upstream)),
                upstream: Vec::new(),
            },
        )
        .await
        .unwrap();
        serve(
            node_addr,
            Handler {
                zone: cluster.clone(),
                upstream: vec![dead_addr, up_addr],
            },
        )
        .await
        .unwrap();
    });

    let a = ask_udp(node_addr, "web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(texts(&a), ["10.96.3.4"]);
    assert_eq!(a.answers[0].ttl, 5);
    // The same over TCP.
    let a = ask_tcp(node_addr, "web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(texts(&a), ["10.96.3.4"]);
    // Headless: every ready endpoint; a hostname of its own.
    let a = ask_udp(node_addr, "db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(texts(&a), ["10.244.1.5", "10.244.2.6"]);
    let a = ask_udp(node_addr, "db-0.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(texts(&a), ["10.244.1.5"]);
    // SRV for a named port, its target's address in the additional section.
    let srv = ask_udp(
        node_addr,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    );
    match &srv.answers[0].data {
        RData::SRV(s) => {
            assert_eq!(s.port, 80);
            assert_eq!(s.target.to_string(), "web.shop.svc.cluster.local.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.additionals.len(), 1, "{srv:?}");
    // PTR of a ClusterIP.
    let ptr = ask_udp(node_addr, "4.3.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(texts(&ptr), ["web.shop.svc.cluster.local."]);
    // A missing name in the domain: NXDOMAIN; an existing one of another type: empty.
    let nx = ask_udp(node_addr, "nope.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let empty = ask_udp(node_addr, "web.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(empty.metadata.response_code, ResponseCode::NoError);
    assert!(empty.answers.is_empty());
    // Outside the domain: relayed (past an upstream that does not answer).
    let out = ask_udp(node_addr, "www.corp.svc.upstream.test.", RecordType::A);
    assert_eq!(out.metadata.response_code, ResponseCode::NoError);
    assert_eq!(texts(&out), ["192.0.2.80"]);
    assert!(!out.metadata.authoritative);
    let out_nx = ask_udp(node_addr, "nope.corp.svc.upstream.test.", RecordType::A);
    assert_eq!(out_nx.metadata.response_code, ResponseCode::NXDomain);

    // A new Service is answered as soon as the zone is swapped.
    *cluster.write().unwrap() = zone(
        "cluster.local",
        json!([{"metadata": {"name": "api", "namespace": "shop"}, "spec": {"clusterIP": "10.96.9.9"}}]),
        json!([]),
    );
    assert_eq!(
        texts(&ask_udp(
            node_addr,
            "api.shop.svc.cluster.local.",
            RecordType::A
        )),
        ["10.96.9.9"]
    );
    assert_eq!(
        ask_udp(node_addr, "web.shop.svc.cluster.local.", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );

    // No upstream answers: SERVFAIL.
    let lonely: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    rt.block_on(async {
        serve(
            lonely,
            Handler {
                zone: cluster.clone(),
                upstream: vec![dead_addr],
            },
        )
        .await
        .unwrap();
    });
    let fail = ask_udp(lonely, "example.org.", RecordType::A);
    assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
}

/// The relay takes only its upstream's answer to its own question: a forged answer from
/// another address (an attacker on the node guessing the relay's port) and an answer with
/// another ID arrive first and are dropped; the real answer, last, is the one relayed.
#[test]
fn forged_and_stray_upstream_answers_are_dropped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    rt.block_on(async {
        serve(
            node_addr,
            Handler {
                zone: Arc::new(RwLock::new(zone("cluster.local", json!([]), json!([])))),
                upstream: vec![up_addr],
            },
        )
        .await
        .unwrap();
    });
    let player = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (n, relay) = upstream.recv_from(&mut buf).unwrap();
        let q = Message::from_vec(&buf[..n]).unwrap();
        let answer = |id: u16, ip: [u8; 4]| {
            let mut m = Message::new(id, MessageType::Response, OpCode::Query);
            m.queries = q.queries.clone();
            m.answers
                .push(hickory_server::proto::rr::Record::from_rdata(
                    q.queries[0].name().clone(),
                    30,
                    RData::A(hickory_server::proto::rr::rdata::A(ip.into())),
                ));
            m.to_vec().unwrap()
        };
        let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
        forger
            .send_to(&answer(q.metadata.id, [203, 0, 113, 66]), relay)
            .unwrap();
        upstream
            .send_to(
                &answer(q.metadata.id.wrapping_add(1), [203, 0, 113, 67]),
                relay,
            )
            .unwrap();
        upstream.send_to(b"not dns", relay).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        upstream
            .send_to(&answer(q.metadata.id, [192, 0, 2, 10]), relay)
            .unwrap();
    });
    let a = ask_udp(node_addr, "example.org.", RecordType::A);
    player.join().unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(texts(&a), ["192.0.2.10"]);
}
