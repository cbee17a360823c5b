//! Client-side failover between several API servers, as k3s agents do it: a TCP front
//! on the node's loopback that the node's clients talk to; each connection goes to the
//! server that took the last one, or, when that one does not accept, to the next that
//! does. TLS passes through untouched (every API server's certificate names 127.0.0.1),
//! so a client's watch that breaks when its server dies reconnects through the front
//! and lands on a live server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one server gets to accept before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A server that dies without a word (a machine losing power) leaves its connections
/// open and silent: a watch would wait forever and a request never be answered. Keepalive
/// probes end an idle connection (5 s idle, then 3 probes 2 s apart) and a bound on
/// unacknowledged data ends a busy one (10 s); the client's connection is closed with it,
/// and the client reconnects through the front to a live server.
fn end_when_silent(s: &tokio::net::TcpStream, server: &str) {
    use nix::sys::socket::{setsockopt, sockopt};
    let set = || -> nix::Result<()> {
        setsockopt(s, sockopt::KeepAlive, &true)?;
        setsockopt(s, sockopt::TcpKeepIdle, &5)?;
        setsockopt(s, sockopt::TcpKeepInterval, &2)?;
        setsockopt(s, sockopt::TcpKeepCount, &3)?;
        setsockopt(s, sockopt::TcpUserTimeout, &10_000)
    };
    if let Err(e) = set() {
        tracing::warn!(server, error = %e, "no keepalive on the API server connection: a silent server's connections stay open");
    }
}

/// `host:port` of an `https://host:port` URL.
pub fn address_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    let rest = rest.split('/').next()?;
    Some(
        if rest
            .rsplit_once(':')
            .is_some_and(|(h, _)| !h.ends_with(']') || rest.starts_with('['))
            && !rest.ends_with(']')
        {
            rest.to_string()
        } else {
            format!("{rest}:443")
        },
    )
}

/// The URL clients use instead of `url`: a front over it and `others` (URLs of the
/// other API servers).
pub async fn front(url: &str, others: &[String]) -> std::io::Result<String> {
    let servers: Vec<String> = std::iter::once(url)
        .chain(others.iter().map(String::as_str))
        .map(|u| {
            address_of(u)
                .ok_or_else(|| std::io::Error::other(format!("{u:?} is not an https:// URL")))
        })
        .collect::<std::io::Result<_>>()?;
    let local = start(servers).await?;
    Ok(format!("https://{local}"))
}

/// Start the front for `servers` (`host:port`, at least one); its local address.
pub async fn start(servers: Vec<String>) -> std::io::Result<SocketAddr> {
    if servers.is_empty() {
        return Err(std::io::Error::other("no API server to front"));
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = l.local_addr()?;
    let servers = Arc::new(servers);
    let current = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = l.accept().await else {
                continue;
            };
            let (servers, current) = (servers.clone(), current.clone());
            tokio::spawn(async move {
                let start = current.load(Ordering::Relaxed);
                for i in 0..servers.len() {
                    let at = (start + i) % servers.len();
                    let s = &servers[at];
                    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(s))
                        .await
                    {
                        Ok(Ok(mut up)) => {
                            end_when_silent(&up, s);
                            if at != start {
                                tracing::warn!(server = %s, was = %servers[start], "API server failover");
                                current.store(at, Ordering::Relaxed);
                            }
                            if let Err(e) =
                                tokio::io::copy_bidirectional(&mut client, &mut up).await
                            {
                                tracing::info!(server = %s, error = %e, "API server connection ended");
                            }
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(server = %s, error = %e, "API server refused")
                        }
                        Err(_) => tracing::debug!(server = %s, "API server did not answer"),
                    }
                }
                tracing::warn!(servers = ?servers, "no API server accepts a connection");
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_give_addresses() {
        assert_eq!(
            address_of("https://10.0.0.1:6443").as_deref(),
            Some("10.0.0.1:6443")
        );
        assert_eq!(
            address_of("https://cp.example/").as_deref(),
            Some("cp.example:443")
        );
        assert_eq!(
            address_of("https://[fd00::1]:6443").as_deref(),
            Some("[fd00::1]:6443")
        );
        assert_eq!(address_of("http://x:1"), None);
    }

    #[tokio::test]
    async fn connections_go_to_a_server_that_accepts() {
        // Two "servers" that say who they are; the first dies.
        let mut names = Vec::new();
        let mut stops = Vec::new();
        for who in ["a", "b"] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            names.push(l.local_addr().unwrap().to_string());
            stops.push(tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    s.write_all(who.as_bytes()).await.unwrap();
                }
            }));
        }
        let front = start(names).await.unwrap();
        let ask = || async move {
            let mut c = tokio::net::TcpStream::connect(front).await.unwrap();
            let mut buf = [0u8; 1];
            c.read_exact(&mut buf).await.unwrap();
            buf[0]
        };
        assert_eq!(ask().await, b'a');
        stops[0].abort();
        let _ = (&mut stops[0]).await;
        assert_eq!(ask().await, b'b', "a is gone: b takes it");
        assert_eq!(ask().await, b'b', "and stays the one asked first");
    }
}
