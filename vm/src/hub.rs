//! A userspace Ethernet hub on loopback UDP: each VM's `-netdev dgram` sends its frames
//! to one hub port, and the hub floods them to every other VM. This joins the VMs on one
//! private L2 segment and nothing else (no tap, no bridge, no route out).

use anyhow::{Context, Result};
use std::net::UdpSocket;
use std::os::fd::AsFd;

/// One VM's attachment: the hub's port for it and the VM's own QEMU port.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Port {
    pub hub: u16,
    pub vm: u16,
}

pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Forward frames until killed.
pub fn run(ports: &[Port]) -> Result<()> {
    let socks: Vec<UdpSocket> = ports
        .iter()
        .map(|p| {
            UdpSocket::bind(("127.0.0.1", p.hub))
                .with_context(|| format!("bind hub port {}", p.hub))
        })
        .collect::<Result<_>>()?;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds: Vec<nix::poll::PollFd> = socks
            .iter()
            .map(|s| nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)?;
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.revents()
                    .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN))
            })
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let Ok(n) = socks[i].recv(&mut buf) else {
                continue;
            };
            for (j, p) in ports.iter().enumerate() {
                if j != i {
                    let _ = socks[j].send_to(&buf[..n], ("127.0.0.1", p.vm));
                }
            }
        }
    }
}
