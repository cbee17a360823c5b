//! Host-local IPAM: one file per allocated address under `<dataDir>/<network>/`, holding
//! the owner (container id and interface). An flock on the directory serializes plugin
//! invocations, files make allocations survive reboots, and an address whose file exists
//! is never handed out again until DEL removes it.

use crate::config::{Attachment, Net};
use crate::error::{CniError, Result};
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff/cni/networks";
const LAST: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";

pub struct Store {
    dir: PathBuf,
    _lock: File,
}

/// The usable range: [start, end], never the network, broadcast or gateway address.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub net: Net,
    pub gateway: Ipv4Addr,
    pub start: u32,
    pub end: u32,
}

impl Range {
    pub fn new(
        net: Net,
        gateway: Option<Ipv4Addr>,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
    ) -> Result<Range> {
        if net.prefix > 30 {
            return Err(CniError::InvalidConfig(format!(
                "subnet {net} is too small (at most /30)"
            )));
        }
        let gateway = gateway.unwrap_or(Ipv4Addr::from(net.network() + 1));
        let s = start.map(u32::from).unwrap_or(net.network() + 1);
        let e = end.map(u32::from).unwrap_or(net.broadcast() - 1);
        for (what, v) in [
            ("gateway", u32::from(gateway)),
            ("rangeStart", s),
            ("rangeEnd", e),
        ] {
            if !net.contains(Ipv4Addr::from(v)) || v == net.network() || v == net.broadcast() {
                return Err(CniError::InvalidConfig(format!(
                    "{what} {} is not a host address of {net}",
                    Ipv4Addr::from(v)
                )));
            }
        }
        if s > e {
            return Err(CniError::InvalidConfig(
                "rangeStart is after rangeEnd".into(),
            ));
        }
        Ok(Range {
            net,
            gateway,
            start: s,
            end: e,
        })
    }
}

fn owner(cid: &str, ifname: &str) -> String {
    format!("{cid}\n{ifname}\n")
}

impl Store {
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        if network.is_empty() || network.contains('/') || network.starts_with('.') {
            return Err(CniError::InvalidConfig(format!(
                "network name {network:?} cannot be a directory name"
            )));
        }
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir)
            .map_err(|e| CniError::Io(format!("create {}: {e}", dir.display())))?;
        let lock = File::create(dir.join(LOCK))?;
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(CniError::Io(format!(
                "lock {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(Store { dir, _lock: lock })
    }

    fn entries(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)?.flatten() {
            if let Ok(ip) = e.file_name().to_string_lossy().parse::<Ipv4Addr>() {
                out.push((ip, fs::read_to_string(e.path()).unwrap_or_default()));
            }
        }
        Ok(out)
    }

    /// The address already held by this attachment, if any.
    pub fn find(&self, cid: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let me = owner(cid, ifname);
        Ok(self
            .entries()?
            .into_iter()
            .find(|(_, o)| *o == me)
            .map(|(ip, _)| ip))
    }

    /// Allocate the next free address after the last one handed out (round robin, so a
    /// just-released address is not reused at once). Idempotent per attachment.
    pub fn allocate(&self, cid: &str, ifname: &str, r: &Range) -> Result<Ipv4Addr> {
        if let Some(ip) = self.find(cid, ifname)? {
            return Ok(ip);
        }
        let last = fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from);
        let size = r.end - r.start + 1;
        let first = match last {
            Some(l) if l >= r.start && l < r.end => l + 1,
            _ => r.start,
        };
        for i in 0..size {
            let cand = r.start + (first - r.start + i) % size;
            if cand == u32::from(r.gateway) {
                continue;
            }
            let ip = Ipv4Addr::from(cand);
            let path = self.dir.join(ip.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(owner(cid, ifname).as_bytes())?;
                    f.sync_all()?;
                    fs::write(self.dir.join(LAST), ip.to_string())?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CniError::Io(format!("reserve {ip}: {e}"))),
            }
        }
        Err(CniError::IpamExhausted(format!(
            "{} ({} to {})",
            r.net,
            Ipv4Addr::from(r.start),
            Ipv4Addr::from(r.end)
        )))
    }

    /// Free this attachment's addresses; freeing nothing is fine (DEL is idempotent).
    pub fn release(&self, cid: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
        let me = owner(cid, ifname);
        let mut freed = Vec::new();
        for (ip, o) in self.entries()? {
            if o == me {
                fs::remove_file(self.dir.join(ip.to_string()))?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }

    /// CNI 1.1 GC: free every address whose attachment is not in `keep`.
    pub fn gc(&self, keep: &[Attachment]) -> Result<Vec<Ipv4Addr>> {
        let keep: Vec<String> = keep
            .iter()
            .map(|a| owner(&a.container_id, &a.ifname))
            .collect();
        let mut freed = Vec::new();
        for (ip, o) in self.entries()? {
            if !keep.contains(&o) {
                fs::remove_file(self.dir.join(ip.to_string()))?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "skiff-ipam-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn allocate_is_idempotent_and_round_robin() {
        let d = tmp();
        let r = Range::new(Net::parse("10.1.0.0/29").unwrap(), None, None, None).unwrap();
        let s = Store::open(&d, "net").unwrap();
        let a = s.allocate("c1", "eth0", &r).unwrap();
        assert_eq!(
            a,
            "10.1.0.2".parse::<Ipv4Addr>().unwrap(),
            "gateway .1 is skipped"
        );
        assert_eq!(
            s.allocate("c1", "eth0", &r).unwrap(),
            a,
            "same attachment, same address"
        );
        let b = s.allocate("c2", "eth0", &r).unwrap();
        assert_eq!(b, "10.1.0.3".parse::<Ipv4Addr>().unwrap());
        assert_eq!(s.release("c1", "eth0").unwrap(), vec![a]);
        assert!(
            s.release("c1", "eth0").unwrap().is_empty(),
            "second release is a no-op"
        );
        let c = s.allocate("c3", "eth0", &r).unwrap();
        assert_eq!(
            c,
            "10.1.0.4".parse::<Ipv4Addr>().unwrap(),
            "no immediate reuse of a freed address"
        );
        drop(s);
        // Survives a "reboot": a new store sees the same allocations.
        let s = Store::open(&d, "net").unwrap();
        assert_eq!(s.find("c2", "eth0").unwrap(), Some(b));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn exhaustion_is_a_clear_error() {
        let d = tmp();
        let r = Range::new(Net::parse("10.2.0.0/30").unwrap(), None, None, None).unwrap();
        let s = Store::open(&d, "tiny").unwrap();
        // /30: .1 gateway, .2 the only host address.
        s.allocate("a", "eth0", &r).unwrap();
        let e = s.allocate("b", "eth0", &r).unwrap_err();
        assert_eq!(e.code(), 110);
        assert!(
            e.to_string()
                .contains("no IP addresses available in range 10.2.0.0/30"),
            "{e}"
        );
        let kept = vec![Attachment {
            container_id: "zzz".into(),
            ifname: "eth0".into(),
        }];
        assert_eq!(
            s.gc(&kept).unwrap().len(),
            1,
            "GC frees attachments not listed"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
