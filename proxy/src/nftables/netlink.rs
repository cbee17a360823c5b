//! Service-port edits straight to nf_tables over netlink, one batch per transaction.
//!
//! Every `nft` run first loads the table's chains into its cache (about 1.2 MB and
//! 60–90 ms at 10,000 services), whatever the change. The edits a sync makes to service
//! ports (their chains, rules, map elements, hairpin elements) have a handful of
//! shapes, so they are encoded here exactly as nft 1.0.6 encodes them (its
//! `--debug=netlink` output is the reference; a test compares the listings of tables
//! written both ways). Anything else (the fixed part, new sets, base chains) still goes
//! through `nft -f`.

use super::service_rule::ServiceRule;
use crate::model::Protocol;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_IPV4: u8 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_REG32_01: u32 = 9;
const NFT_REG32_02: u32 = 10;
const NFT_REG32_05: u32 = 13;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NF_DROP: i32 = 0;

/// Netlink attributes: length, type, payload, padded to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        // An attribute's length is 16 bits: a longer one would be cut short, silently.
        assert!(
            len <= usize::from(u16::MAX),
            "netlink attribute of {len} bytes"
        );
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }
    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }
    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(kind, &b)
    }
    fn nest(&mut self, kind: u16, inner: Attrs) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

/// NFTA_DATA_VALUE inside the given attribute.
fn value(bytes: &[u8]) -> Attrs {
    let mut a = Attrs::default();
    a.put(1, bytes);
    a
}

fn verdict(code: i32, chain: Option<&str>) -> Attrs {
    let mut v = Attrs::default();
    v.u32(1, code as u32);
    if let Some(c) = chain {
        v.str(2, c);
    }
    let mut d = Attrs::default();
    d.nest(2, v);
    d
}

/// One rule's expression list.
#[derive(Default)]
struct Exprs(Attrs);

impl Exprs {
    fn expr(&mut self, name: &str, data: Attrs) -> &mut Self {
        let mut e = Attrs::default();
        e.str(1, name);
        e.nest(2, data);
        self.0.nest(1, e);
        self
    }
    fn payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) -> &mut Self {
        let mut a = Attrs::default();
        a.u32(1, dreg).u32(2, base).u32(3, offset).u32(4, len);
        self.expr("payload", a)
    }
    fn cmp(&mut self, op: u32, data: &[u8]) -> &mut Self {
        let mut a = Attrs::default();
        a.u32(1, NFT_REG_1).u32(2, op).nest(3, value(data));
        self.expr("cmp", a)
    }
    fn meta_l4proto(&mut self) -> &mut Self {
        self.meta_l4proto_to(NFT_REG_1)
    }
    fn meta_l4proto_to(&mut self, dreg: u32) -> &mut Self {
        let mut a = Attrs::default();
        a.u32(2, 16).u32(1, dreg);
        self.expr("meta", a)
    }
    fn immediate(&mut self, dreg: u32, data: Attrs) -> &mut Self {
        let mut a = Attrs::default();
        a.u32(1, dreg).nest(2, data);
        self.expr("immediate", a)
    }
    fn numgen_random(&mut self, modulus: u32) -> &mut Self {
        self.numgen_random_to(modulus, NFT_REG_1)
    }
    fn numgen_random_to(&mut self, modulus: u32, dreg: u32) -> &mut Self {
        let mut a = Attrs::default();
        a.u32(1, dreg).u32(2, modulus).u32(3, 1).u32(4, 0);
        self.expr("numgen", a)
    }
    fn dnat(&mut self, ip: Ipv4Addr, port: u16) -> &mut Self {
        self.immediate(NFT_REG_1, value(&ip.octets()));
        self.immediate(NFT_REG_2, value(&port.to_be_bytes()));
        let mut a = Attrs::default();
        // NF_NAT_RANGE_PROTO_SPECIFIED, as nft sets it.
        a.u32(1, 1)
            .u32(2, u32::from(NFPROTO_IPV4))
            .u32(3, NFT_REG_1)
            .u32(5, NFT_REG_2)
            .u32(7, 2);
        self.expr("nat", a)
    }
}

const NETWORK: u32 = 1;
const TRANSPORT: u32 = 2;

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn encode(rule: &ServiceRule) -> Exprs {
    let mut x = Exprs::default();
    match rule {
        ServiceRule::Pick { nodeport, of } => {
            // As nft: the key's fields in consecutive 32-bit registers from register
            // 1, the endpoint's address and port back in registers 1 and 9.
            let mut reg = NFT_REG_1;
            let mut next = || {
                let r = reg;
                reg = if reg == NFT_REG_1 {
                    NFT_REG32_01
                } else {
                    reg + 1
                };
                r
            };
            if !nodeport {
                x.payload(NETWORK, 16, 4, next());
            }
            x.meta_l4proto_to(next());
            x.payload(TRANSPORT, 2, 2, next());
            x.numgen_random_to(*of, next());
            let set = if *nodeport {
                super::layout::NODEPORT_ENDPOINTS
            } else {
                super::layout::ADDRESS_ENDPOINTS
            };
            let mut a = Attrs::default();
            a.str(1, set).u32(2, NFT_REG_1).u32(3, NFT_REG_1);
            x.expr("lookup", a);
            let mut a = Attrs::default();
            // NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED, as nft sets them.
            a.u32(1, 1)
                .u32(2, u32::from(NFPROTO_IPV4))
                .u32(3, NFT_REG_1)
                .u32(4, NFT_REG_1)
                .u32(5, NFT_REG32_01)
                .u32(6, NFT_REG32_01)
                .u32(7, 3);
            x.expr("nat", a);
        }
        ServiceRule::Dnat {
            protocol,
            of,
            affinity,
            ip,
            port,
        } => {
            x.meta_l4proto().cmp(0, &[protocol_number(*protocol)]);
            if let Some(n) = of {
                x.numgen_random(*n).cmp(0, &0u32.to_ne_bytes());
            }
            if let Some(t) = affinity {
                // Key client . service address . port in registers 1, 9, 10; data
                // endpoint address . port in 2 and 13.
                x.payload(NETWORK, 12, 4, NFT_REG_1)
                    .payload(NETWORK, 16, 4, NFT_REG32_01)
                    .payload(TRANSPORT, 2, 2, NFT_REG32_02)
                    .immediate(NFT_REG_2, value(&ip.octets()))
                    .immediate(NFT_REG32_05, value(&port.to_be_bytes()));
                let mut a = Attrs::default();
                a.str(1, super::layout::AFFINITY)
                    .u32(3, 1)
                    .u32(4, NFT_REG_1)
                    .u32(5, NFT_REG_2)
                    .put(6, &(u64::from(*t) * 1000).to_be_bytes());
                x.expr("dynset", a);
            }
            x.dnat(*ip, *port);
        }
        ServiceRule::Jump(c) => {
            x.immediate(NFT_REG_VERDICT, verdict(NFT_JUMP, Some(c)));
        }
        ServiceRule::Goto(c) => {
            x.immediate(NFT_REG_VERDICT, verdict(NFT_GOTO, Some(c)));
        }
        ServiceRule::Drop => {
            x.immediate(NFT_REG_VERDICT, verdict(NF_DROP, None));
        }
    }
    x
}

/// nft's rule comment, as its userdata TLV (type 0, length, NUL-terminated text).
fn comment(text: &str) -> Vec<u8> {
    let mut b = vec![0u8, (text.len() + 1) as u8];
    b.extend_from_slice(text.as_bytes());
    b.push(0);
    b
}

/// A key field of a concatenation: each padded to 4 bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
}

/// What an element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Goto(String),
    Drop,
    /// An endpoint: address . port.
    Value(Vec<u8>),
}

/// An element, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub data: Option<Data>,
    /// nft's element comment (naming the Service).
    pub comment: Option<String>,
}

/// An element as we write it (`10.96.0.1 . tcp . 80 comment "ns/a:http" : goto chain`,
/// `tcp . 30001 : drop`, `10.96.0.1 . tcp . 80 . 0x00000001 : 10.1.0.1 . 8080`,
/// `10.1.0.1 . 10.1.0.1`), encoded; None if it is in no format of ours.
pub fn element(text: &str) -> Option<Element> {
    let (key, data) = match text.split_once(" : ") {
        Some((k, d)) => (k, Some(d)),
        None => (text, None),
    };
    let (key, comment) = match key.split_once(" comment \"") {
        Some((k, c)) => (k, Some(c.strip_suffix('"')?.to_string())),
        None => (key, None),
    };
    let data = match data {
        None => None,
        Some("drop") => Some(Data::Drop),
        Some(d) => match d.strip_prefix("goto ") {
            Some(c) => Some(Data::Goto(c.to_string())),
            None => Some(Data::Value(fields(d)?)),
        },
    };
    Some(Element {
        key: fields(key)?,
        data,
        comment,
    })
}

/// The fields of a concatenation, each padded to 4 bytes: addresses, protocols, ports
/// (network order) and marks (`0x…`, host order, as nft and numgen have them).
fn fields(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    for part in text.split(" . ") {
        if let Ok(ip) = part.parse::<Ipv4Addr>() {
            field(&mut bytes, &ip.octets());
        } else if let Some(p) = ["tcp", "udp", "sctp"].iter().position(|p| *p == part) {
            field(&mut bytes, &[[6u8, 17, 132][p]]);
        } else if let Some(hex) = part.strip_prefix("0x") {
            field(
                &mut bytes,
                &u32::from_str_radix(hex, 16).ok()?.to_ne_bytes(),
            );
        } else {
            field(&mut bytes, &part.parse::<u16>().ok()?.to_be_bytes());
        }
    }
    Some(bytes)
}

/// One nf_tables transaction.
pub struct Batch {
    table: String,
    buf: Vec<u8>,
    seq: u32,
    messages: u32,
    /// What each message does, by sequence number - 1: the kernel names a failure by
    /// its sequence number only.
    ops: Vec<String>,
}

impl Batch {
    pub fn new(table: &str) -> Batch {
        let mut b = Batch {
            table: table.to_string(),
            buf: Vec::new(),
            seq: 0,
            messages: 0,
            ops: Vec::new(),
        };
        b.op("batch begin".into());
        b.message(NFNL_MSG_BATCH_BEGIN, 0, &[], true);
        b
    }

    /// Describe the next message.
    fn op(&mut self, what: String) {
        self.ops.push(what);
    }

    fn message(&mut self, kind: u16, flags: u16, attrs: &[u8], control: bool) {
        self.seq += 1;
        let len = 16 + 4 + attrs.len();
        let kind = if control {
            kind
        } else {
            (NFNL_SUBSYS_NFTABLES << 8) | kind
        };
        self.buf.extend_from_slice(&(len as u32).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        if control {
            // The batch names the subsystem it is for.
            self.buf.push(libc::AF_UNSPEC as u8);
            self.buf.push(0);
            self.buf
                .extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        } else {
            self.buf.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]);
            self.messages += 1;
        }
        self.buf.extend_from_slice(attrs);
    }

    fn table_attrs(&self, kind: u16) -> Attrs {
        let mut a = Attrs::default();
        a.str(kind, &self.table);
        a
    }

    pub fn add_chain(&mut self, chain: &str) {
        self.op(format!("add chain {chain}"));
        let mut a = self.table_attrs(1);
        a.str(3, chain);
        self.message(NFT_MSG_NEWCHAIN, libc::NLM_F_CREATE as u16, &a.0, false);
    }

    pub fn delete_chain(&mut self, chain: &str) {
        self.op(format!("delete chain {chain}"));
        let mut a = self.table_attrs(1);
        a.str(3, chain);
        self.message(NFT_MSG_DELCHAIN, 0, &a.0, false);
    }

    pub fn flush_chain(&mut self, chain: &str) {
        self.op(format!("flush chain {chain}"));
        let mut a = self.table_attrs(1);
        a.str(2, chain);
        self.message(NFT_MSG_DELRULE, 0, &a.0, false);
    }

    pub fn add_rule(&mut self, chain: &str, rule: &ServiceRule, note: &str) {
        self.op(format!("add rule to {chain} ({note})"));
        let mut a = self.table_attrs(1);
        a.str(2, chain)
            .nest(4, encode(rule).0)
            .put(7, &comment(note));
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16;
        self.message(NFT_MSG_NEWRULE, flags, &a.0, false);
    }

    /// Elements of one set.
    pub fn elements(&mut self, set: &str, add: bool, elems: &[Element]) {
        if elems.is_empty() {
            return;
        }
        // The element list is one attribute, whose length is 16 bits: a message per
        // 48 KiB of elements.
        let mut lists = vec![Attrs::default()];
        for el in elems {
            let mut e = Attrs::default();
            e.nest(1, value(&el.key));
            match (add, &el.data) {
                (true, Some(Data::Goto(c))) => {
                    e.nest(2, verdict(NFT_GOTO, Some(c)));
                }
                (true, Some(Data::Drop)) => {
                    e.nest(2, verdict(NF_DROP, None));
                }
                (true, Some(Data::Value(v))) => {
                    e.nest(2, value(v));
                }
                _ => {}
            }
            if let (true, Some(c)) = (add, &el.comment) {
                // NFTA_SET_ELEM_USERDATA: the comment TLV nft writes (and reads back).
                e.put(6, &comment(c));
            }
            if lists
                .last()
                .is_some_and(|l| l.0.len() + e.0.len() > 48 * 1024)
            {
                lists.push(Attrs::default());
            }
            lists.last_mut().expect("one list").nest(1, e);
        }
        let keys: Vec<String> = elems
            .iter()
            .map(|e| e.key.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let what = format!(
            "{} {} element(s) of {set} ({}{})",
            if add { "add" } else { "delete" },
            elems.len(),
            keys.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
            if keys.len() > 4 { ", ..." } else { "" }
        );
        for list in lists {
            self.op(what.clone());
            let mut a = self.table_attrs(1);
            a.str(2, set).nest(3, list);
            let (kind, flags) = if add {
                (NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE as u16)
            } else {
                (NFT_MSG_DELSETELEM, 0)
            };
            self.message(kind, flags, &a.0, false);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Send the batch and wait for the kernel's verdict on it.
    pub fn commit(mut self) -> io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        // The last message asks for an acknowledgement: it arrives once the whole
        // batch is committed; any failure arrives as an error instead.
        let last_seq = self.seq;
        let last_flags_at = self.last_message_offset() + 6;
        let flags = u16::from_ne_bytes([self.buf[last_flags_at], self.buf[last_flags_at + 1]])
            | libc::NLM_F_ACK as u16;
        self.buf[last_flags_at..last_flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
        self.op("batch end".into());
        self.message(NFNL_MSG_BATCH_END, 0, &[], true);
        crate::generation::with_socket(|fd| self.send(fd, last_seq))
    }

    fn send(&self, fd: &std::os::fd::OwnedFd, last_seq: u32) -> io::Result<()> {
        // The batch goes in one sendmsg: make room for it (root may exceed wmem_max).
        let size = (self.buf.len() + 65536) as libc::c_int;
        // SAFETY: setsockopt with a valid int option.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        // SAFETY: the buffer is valid for its length; the kernel is the default peer.
        let sent =
            unsafe { libc::send(fd.as_raw_fd(), self.buf.as_ptr().cast(), self.buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    // More replies than the socket holds: only errors are sent unasked.
                    return Err(io::Error::other(
                        "nf_tables rejected the batch (more errors than could be read)",
                    ));
                }
                return Err(e);
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if len < 16 || at + len > n {
                    break;
                }
                if kind == libc::NLMSG_ERROR as u16 && len >= 36 {
                    let errno = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap());
                    let seq = u32::from_ne_bytes(buf[at + 28..at + 32].try_into().unwrap());
                    if errno != 0 {
                        return Err(io::Error::new(
                            io::Error::from_raw_os_error(-errno).kind(),
                            format!(
                                "nf_tables rejected message {seq} of the batch ({}): {}",
                                self.ops
                                    .get((seq as usize).wrapping_sub(1))
                                    .map_or("?", String::as_str),
                                io::Error::from_raw_os_error(-errno)
                            ),
                        ));
                    }
                    if seq == last_seq {
                        return Ok(());
                    }
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Where the last message before the batch end starts.
    fn last_message_offset(&self) -> usize {
        let mut at = 0;
        let mut last = 0;
        while at + 4 <= self.buf.len() {
            last = at;
            let len = u32::from_ne_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            at += (len + 3) & !3;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_encode_as_nft_does() {
        // nft --debug=netlink: `element 0100600a 00000006 00005000 : goto -> x`
        let e = element("10.96.0.1 . tcp . 80 : goto x").unwrap();
        assert_eq!(e.key, [10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(e.data, Some(Data::Goto("x".into())));
        assert_eq!(e.comment, None);
        // `element 0300000a 00000006 00005000 : drop 0 [end] userdata = { \x00\x05ns/c\x00 }`
        let e = element("10.0.0.3 . tcp . 80 comment \"ns/c\" : drop").unwrap();
        assert_eq!(e.key, [10, 0, 0, 3, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(
            (e.data, e.comment.as_deref()),
            (Some(Data::Drop), Some("ns/c"))
        );
        assert_eq!(comment("ns/c"), b"\x00\x05ns/c\x00");
        // `element 0900610a 00000006 00005000 00000001 : 0a00c80a 0000901f`
        let e = element("10.97.0.9 . tcp . 80 . 0x00000001 : 10.200.0.10 . 8080").unwrap();
        let mut want = vec![10, 97, 0, 9, 6, 0, 0, 0, 0, 80, 0, 0];
        want.extend_from_slice(&1u32.to_ne_bytes());
        assert_eq!(e.key, want);
        assert_eq!(
            e.data,
            Some(Data::Value(vec![10, 200, 0, 10, 0x1f, 0x90, 0, 0]))
        );
        assert_eq!(
            element("tcp . 30001 : drop").unwrap().data,
            Some(Data::Drop)
        );
        let key = element("udp . 30001 : goto y").unwrap().key;
        assert_eq!(key, [17, 0, 0, 0, 0x75, 0x31, 0, 0]);
        let e = element("10.1.0.1 . 10.1.0.1").unwrap();
        assert_eq!((e.key.len(), e.data), (8, None));
        assert!(element("10.1.0.1 . nonsense").is_none());
        assert_eq!(comment("ab"), [0, 3, b'a', b'b', 0]);
    }
}
