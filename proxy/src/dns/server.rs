//! The DNS server on hickory-server: questions in the cluster's domain are answered
//! from the [`Zone`] (authoritative, TTL 5 s as CoreDNS' kubernetes plugin), the rest
//! are passed to the node's upstream resolvers and their answer relayed.

use super::zone::{Lookup, Qtype, Rdata, Zone};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Seconds clients may keep an answer from the zone.
const TTL: u32 = 5;
/// How long an upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The zone, swapped whole when Services or EndpointSlices change.
pub type Shared = Arc<RwLock<Arc<Zone>>>;

pub struct Handler {
    pub zone: Shared,
    pub upstream: Vec<SocketAddr>,
}

fn qtype(t: RecordType) -> Qtype {
    match t {
        RecordType::A => Qtype::A,
        RecordType::AAAA => Qtype::Aaaa,
        RecordType::SRV => Qtype::Srv,
        RecordType::CNAME => Qtype::Cname,
        RecordType::PTR => Qtype::Ptr,
        RecordType::ANY => Qtype::Any,
        _ => Qtype::Other,
    }
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

fn record(owner: &str, r: &Rdata) -> Option<Record> {
    let data = match r {
        Rdata::A(ip) => RData::A(A(*ip)),
        Rdata::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rdata::Srv { port, target } => RData::SRV(SRV::new(0, 100, *port, fqdn(target)?)),
        Rdata::Cname(t) => RData::CNAME(CNAME(fqdn(t)?)),
        Rdata::Ptr(t) => RData::PTR(PTR(fqdn(t)?)),
    };
    Some(Record::from_rdata(fqdn(owner)?, TTL, data))
}

impl Handler {
    /// The upstream resolvers' answer to the raw question, from the first that answers.
    async fn forward(&self, raw: &[u8]) -> Option<Message> {
        let id = Message::from_vec(raw).ok()?.metadata.id;
        for up in &self.upstream {
            // The question leaves from loopback for a resolver on loopback.
            let bind: SocketAddr = match up {
                _ if up.ip().is_loopback() => SocketAddr::new(up.ip(), 0),
                SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("address"),
                SocketAddr::V6(_) => "[::]:0".parse().expect("address"),
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            // Only the upstream's answer to this question counts: a datagram from another
            // address, an unparsable one or one with another ID (a spoofing attempt, or a
            // stray packet) is dropped and the wait goes on.
            let asked = async {
                sock.send_to(raw, up).await?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await?;
                    if from != *up {
                        tracing::debug!(upstream = %up, from = %from, "answer from another address dropped");
                        continue;
                    }
                    match Message::from_vec(&buf[..n]) {
                        Ok(m)
                            if m.metadata.id == id
                                && m.metadata.message_type == MessageType::Response =>
                        {
                            return Ok::<_, std::io::Error>(m)
                        }
                        Ok(_) => {
                            tracing::debug!(upstream = %up, "answer to another question dropped")
                        }
                        Err(e) => {
                            tracing::debug!(upstream = %up, error = %e, "bad upstream answer")
                        }
                    }
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, asked).await {
                Ok(Ok(m)) => return Some(m),
                Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
                Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::new(&request.queries, None);
        let mut meta = Metadata::response_from_request(&request.metadata);
        let Ok(info) = request.request_info() else {
            let r = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response_handle, r, request).await;
        };
        let name = info.query.name().to_string();
        let q = qtype(info.query.query_type());
        let lookup = {
            let z = self.zone.read().unwrap_or_else(|p| p.into_inner()).clone();
            z.lookup(&name, q)
        };
        tracing::trace!(name, ?q, ?lookup, "question");
        match lookup {
            Lookup::Found {
                answers,
                additional,
            } => {
                meta.authoritative = true;
                let answers: Vec<Record> =
                    answers.iter().filter_map(|(n, r)| record(n, r)).collect();
                let additional: Vec<Record> = additional
                    .iter()
                    .filter_map(|(n, r)| record(n, r))
                    .collect();
                let r = builder.build(meta, answers.iter(), None, None, additional.iter());
                send(&mut response_handle, r, request).await
            }
            Lookup::NoData | Lookup::NxDomain => {
                meta.authoritative = true;
                if lookup == Lookup::NxDomain {
                    meta.response_code = ResponseCode::NXDomain;
                }
                let r = builder.build_no_records(meta);
                send(&mut response_handle, r, request).await
            }
            Lookup::Elsewhere => match self.forward(request.as_slice()).await {
                Some(up) => {
                    meta.recursion_available = true;
                    meta.response_code = up.metadata.response_code;
                    let r = builder.build(
                        meta,
                        up.answers.iter(),
                        up.authorities.iter(),
                        None,
                        up.additionals.iter(),
                    );
                    send(&mut response_handle, r, request).await
                }
                None => {
                    let r = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                    send(&mut response_handle, r, request).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    h: &mut R,
    r: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match h.send_response(r).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(src = %request.src(), error = %e, "DNS answer not sent");
            let mut meta = Metadata::response_from_request(&request.metadata);
            meta.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            }
            .into()
        }
    }
}

/// Serve DNS over UDP and TCP at `addr` until the process ends.
pub async fn serve(addr: SocketAddr, handler: Handler) -> std::io::Result<()> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::error!(error = %e, "DNS server ended");
        }
    });
    Ok(())
}
