//! The rules in the kernel as a whole, in a private network namespace: what the nftables
//! proxier reads back equals what it wrote; a sync or resync with nothing changed, and a
//! restart, touch nothing (the kernel's rule handles stay); a change touches only its
//! service's chain; changes made behind the proxy's back are repaired exactly by the
//! resync; affinity entries of a removed endpoint are forgotten. The iptables mode's
//! partial syncs likewise leave unchanged services' chains alone. Needs root, nft and
//! iptables.

mod common;

use skiff_proxy::apply::{cleanup, Applier, Mode};
use skiff_proxy::nftables::{layout, table};
use skiff_proxy::{Options, Protocol, ServicePort};
use std::collections::BTreeMap;
use std::process::Command;

/// A network namespace, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("pxt{tag}{}", std::process::id() % 100000);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name} (needs root)");
        Netns(name)
    }

    /// Run `f` on a thread inside the namespace (the nft it runs too).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        common::in_netns(&self.0, f)
    }

    fn sh(&self, cmd: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn require() {
    common::require(&["nft", "iptables-restore"]);
}

fn port(name: &str, ip: &str, eps: &[&str]) -> ServicePort {
    ServicePort {
        namespace: "ns".into(),
        name: name.into(),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        cluster_ip: Some(ip.parse().unwrap()),
        external_ips: Vec::new(),
        port: 80,
        node_port: None,
        affinity_seconds: None,
        local_endpoints: Vec::new(),
        external_local: false,
        internal_local: false,
        endpoints: eps.iter().map(|e| (e.parse().unwrap(), 8080)).collect(),
    }
}

/// Every shape of service port the layout has.
fn ports() -> Vec<ServicePort> {
    let mut a = port("a", "10.96.0.1", &["10.1.0.1", "10.1.0.2"]);
    a.node_port = Some(30001);
    a.affinity_seconds = Some(600);
    let mut b = port("b", "10.96.0.2", &["10.1.0.3"]);
    b.protocol = Protocol::Udp;
    b.port_name = String::new();
    b.port = 53;
    b.external_ips = vec!["192.0.2.10".parse().unwrap()];
    b.internal_local = true;
    b.local_endpoints = b.endpoints.clone();
    let mut c = port("c", "10.96.0.3", &[]);
    c.node_port = Some(30003);
    let mut d = port("d", "10.96.0.4", &["10.1.0.1", "10.1.0.4"]);
    d.node_port = Some(30004);
    d.external_local = true;
    let e = port("e", "10.96.0.5", &["10.1.0.5", "10.1.0.6", "10.1.0.7"]);
    vec![a, b, c, d, e]
}

fn opts() -> Options {
    Options {
        cluster_cidr: Some("10.1.0.0/16".into()),
        table: "skiff-proxy-test".into(),
    }
}

/// `element` is in `listing`, its protocols by name or by number (kernels that do not
/// give nft a set's field types back, as Debian's 6.1, have nft print `tcp` as `6`).
fn listed(listing: &str, element: &str) -> bool {
    listing.contains(element)
        || listing.contains(&element.replace(" tcp ", " 6 ").replace(" udp ", " 17 "))
}

/// Chain name → its listing lines (with handles), from `nft -a list table`.
fn chains_with_handles(listing: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in listing.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("chain ").and_then(|h| h.split(" {").next()) {
            current = Some((name.to_string(), vec![l.to_string()]));
        } else if l == "}" {
            if let Some((n, lines)) = current.take() {
                out.insert(n, lines);
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(l.to_string());
        }
    }
    out
}

/// The listing's sets and chains, each as its lines, sorted by name, with elements
/// sorted (the kernel lists chains in creation order and elements in hash order).
fn normalized(listing: &str) -> Vec<Vec<String>> {
    let joined = listing.replace(",\n", ", ");
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in joined.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("table ") || (l == "}" && line.starts_with('}')) {
            continue;
        }
        if l.starts_with("chain ") || l.starts_with("set ") || l.starts_with("map ") {
            blocks.push(Vec::new());
        }
        let l = match l.strip_prefix("elements = { ") {
            Some(rest) => {
                let inner = rest.trim_end_matches(" }").trim_end_matches('}');
                let mut items: Vec<&str> = inner.split(',').map(str::trim).collect();
                items.sort();
                format!("elements = {{ {} }}", items.join(", "))
            }
            None => l.to_string(),
        };
        if let Some(b) = blocks.last_mut() {
            b.push(l);
        }
    }
    blocks.sort();
    blocks
}

#[test]
#[ignore = "needs root and nft"]
fn nftables_reads_back_what_it_wrote_and_touches_nothing_unchanged() {
    require();
    let ns = Netns::new("rb");
    let o = opts();
    let list = format!("nft -a list table ip {}", o.table);
    let (first, mut a) = ns.run({
        let o = o.clone();
        move || {
            let mut a = Applier::new(Mode::Nftables, o);
            let r = a.sync(&ports()).unwrap();
            (r, a)
        }
    });
    assert!(first.changed() && first.read_back, "{first:?}");
    // The kernel's table, read back, is exactly what the layout wants.
    let kernel = table::parse_listing(&ns.sh(&format!("nft list table ip {}", o.table)));
    let desired = layout::desired(&ports(), &o);
    let edits = table::Edits::between(&kernel, &desired);
    assert!(edits.is_empty(), "{}", edits.render(&o.table));
    let before = ns.sh(&list);
    // Same ports: nothing to do, by a sync, a resync, or a restarted proxier.
    a = ns.run(move || {
        assert!(!a.sync(&ports()).unwrap().changed());
        assert!(!a.resync(&ports()).unwrap().changed());
        a
    });
    let restarted = ns.run({
        let o = o.clone();
        move || Applier::new(Mode::Nftables, o).sync(&ports()).unwrap()
    });
    assert!(restarted.read_back && !restarted.changed(), "{restarted:?}");
    assert_eq!(
        ns.sh(&list),
        before,
        "handles changed with nothing to change"
    );

    // One endpoint of e changes: one element of the endpoint map is replaced (and the
    // hairpin set follows); no chain is touched, so the kernel validates nothing.
    let mut changed = ports();
    changed[4].endpoints[1].0 = "10.1.0.9".parse().unwrap();
    let (r, a) = ns.run(move || {
        let r = a.sync(&changed).unwrap();
        (r, a)
    });
    assert_eq!((r.chains, r.read_back), (0, false), "{r:?}");
    assert_eq!(
        chains_with_handles(&ns.sh(&list)),
        chains_with_handles(&before)
    );
    let endpoints = ns.sh(&format!(
        "nft list map ip {} {}",
        o.table,
        layout::ADDRESS_ENDPOINTS
    ));
    assert!(
        listed(
            &endpoints,
            "10.96.0.5 . tcp . 80 . 0x00000001 : 10.1.0.9 . 8080"
        ) && !endpoints.contains("10.1.0.6 . 8080"),
        "{endpoints}"
    );
    let hairpin = ns.sh(&format!("nft list set ip {} hairpin", o.table));
    assert!(hairpin.contains("10.1.0.9 . 10.1.0.9") && !hairpin.contains("10.1.0.6 . 10.1.0.6"));
    // A fourth endpoint: e moves to the pick chain for four, made for it, and the one
    // for three goes (no one else used it); back to three, the other way round.
    let mut four = ports_changed();
    four[4].endpoints.push(("10.1.0.10".parse().unwrap(), 8080));
    let a = ns.run(move || {
        let mut a = a;
        let r = a.sync(&four).unwrap();
        assert_eq!(r.chains, 2, "{r:?}");
        a
    });
    let listing = ns.sh(&list);
    assert!(listing.contains("chain pick-address-4 {"), "{listing}");
    assert!(!listing.contains("pick-address-3"), "{listing}");
    assert!(
        listed(
            &listing,
            "10.96.0.5 . tcp . 80 comment \"ns/e:http\" : goto pick-address-4"
        ),
        "{listing}"
    );
    ns.run(move || {
        let mut a = a;
        assert_eq!(a.sync(&ports_changed()).unwrap().chains, 2);
    });
    let listing = ns.sh(&list);
    assert!(!listing.contains("pick-address-4"), "{listing}");
    assert!(listing.contains("chain pick-address-3 {"), "{listing}");
    let kernel = table::parse_listing(&ns.sh(&format!("nft list table ip {}", o.table)));
    assert!(table::Edits::between(&kernel, &layout::desired(&ports_changed(), &o)).is_empty());
    ns.run(move || cleanup(Mode::Nftables, &opts()).unwrap());
}

#[test]
#[ignore = "needs root and nft"]
fn nftables_resync_repairs_changes_made_behind_its_back() {
    require();
    let ns = Netns::new("rs");
    let o = opts();
    let t = o.table.clone();
    let mut a = ns.run({
        let o = o.clone();
        move || {
            let mut a = Applier::new(Mode::Nftables, o);
            a.sync(&ports()).unwrap();
            a
        }
    });
    let good = ns.sh(&format!("nft list table ip {t}"));
    let handles = chains_with_handles(&ns.sh(&format!("nft -a list table ip {t}")));
    // Someone deletes a rule, adds one, flushes a chain, and edits the maps and sets.
    let chain_a = handles
        .keys()
        .find(|k| k.starts_with("service-") && k.ends_with("ns/a/tcp/http"))
        .unwrap()
        .clone();
    let handle = handles[&chain_a][1]
        .rsplit("# handle ")
        .next()
        .unwrap()
        .to_string();
    ns.sh(&format!(
        "nft delete rule ip {t} {chain_a} handle {handle} && \
         nft insert rule ip {t} services ip daddr 10.96.0.99 drop && \
         nft flush chain ip {t} masquerading && \
         nft delete element ip {t} service-ips '{{ 10.96.0.1 . tcp . 80 }}' && \
         nft add element ip {t} service-ips '{{ 10.96.0.98 . tcp . 80 : goto reject-chain }}' && \
         nft delete element ip {t} hairpin '{{ 10.1.0.3 . 10.1.0.3 }}'"
    ));
    assert_ne!(
        normalized(&ns.sh(&format!("nft list table ip {t}"))),
        normalized(&good)
    );
    // A plain sync trusts what it wrote; the periodic resync notices and repairs.
    let (r, mut a) = ns.run(move || {
        assert!(!a.sync(&ports()).unwrap().changed());
        let r = a.resync(&ports()).unwrap();
        (r, a)
    });
    assert!(r.read_back && r.changed(), "{r:?}");
    assert_eq!(r.chains, 3, "a's chain, services and masquerading: {r:?}");
    assert_eq!(r.elements, 3, "{r:?}");
    assert_eq!(
        normalized(&ns.sh(&format!("nft list table ip {t}"))),
        normalized(&good)
    );
    // Repaired: the next resync has nothing to read back or change.
    let r = ns.run(move || a.resync(&ports()).unwrap());
    assert!(!r.read_back && !r.changed(), "{r:?}");
    // A missing pick chain (and with it the elements leading there) comes back too.
    ns.sh(&format!(
        "nft delete element ip {t} service-ips '{{ 10.96.0.5 . tcp . 80 }}' && \
         nft delete element ip {t} address-endpoints '{{ 10.96.0.5 . tcp . 80 . 0x00000002 }}' && \
         nft flush chain ip {t} pick-address-3 && nft delete chain ip {t} pick-address-3"
    ));
    let r = ns.run({
        let o = o.clone();
        move || Applier::new(Mode::Nftables, o).sync(&ports()).unwrap()
    });
    assert_eq!((r.chains, r.elements), (1, 2), "{r:?}");
    assert_eq!(
        normalized(&ns.sh(&format!("nft list table ip {t}"))),
        normalized(&good)
    );
    ns.run(move || cleanup(Mode::Nftables, &opts()).unwrap());
}

#[test]
#[ignore = "needs root and nft"]
fn nftables_forgets_affinity_of_removed_endpoints() {
    require();
    let ns = Netns::new("af");
    let t = opts().table;
    let mut a = ns.run(move || {
        let mut a = Applier::new(Mode::Nftables, opts());
        a.sync(&ports()).unwrap();
        a
    });
    // Two clients remembered for service a: one on each endpoint.
    ns.sh(&format!(
        "nft add element ip {t} affinity '{{ 10.2.0.1 . 10.96.0.1 . 80 timeout 1h : 10.1.0.1 . 8080, 10.2.0.2 . 10.96.0.1 . 80 timeout 1h : 10.1.0.2 . 8080 }}'"
    ));
    let mut fewer = ports();
    fewer[0].endpoints.remove(0);
    ns.run(move || a.sync(&fewer).unwrap());
    let left = ns.sh(&format!("nft list map ip {t} affinity"));
    assert!(!left.contains("10.2.0.1 . 10.96.0.1"), "{left}");
    assert!(left.contains("10.2.0.2 . 10.96.0.1"), "{left}");
    ns.run(move || cleanup(Mode::Nftables, &opts()).unwrap());
}

#[test]
#[ignore = "needs root and iptables"]
fn iptables_partial_sync_leaves_unchanged_services_alone() {
    require();
    let ns = Netns::new("ip");
    let mut a = ns.run(move || {
        let mut a = Applier::new(Mode::Iptables, opts());
        a.sync(&ports()).unwrap();
        a
    });
    // iptables-nft keeps its rules in nf_tables: its handles show what was rewritten.
    let list = "nft -a list table ip nat";
    let before = chains_with_handles(&ns.sh(list));
    let mut changed = ports();
    changed[4].endpoints[1].0 = "10.1.0.9".parse().unwrap();
    let r = ns.run(move || {
        let r = a.sync(&changed).unwrap();
        assert!(!a.sync(&changed).unwrap().changed(), "nothing more to do");
        (r, a)
    });
    let (r, a) = r;
    assert!(r.changed());
    let after = chains_with_handles(&ns.sh(list));
    let touched: std::collections::BTreeSet<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    // e's service chain and its endpoint chains (one gone, one new), and the
    // top-level chains, which partial syncs write whole (as kube-proxy does).
    assert!(
        touched.iter().all(|c| c.contains("-SVC-")
            || c.contains("-SEP-")
            || c.starts_with("SKIFF-SERVICES")
            || c.starts_with("SKIFF-NODEPORTS")
            || c.starts_with("SKIFF-P")
            || c.starts_with("SKIFF-MARK")),
        "{touched:?}"
    );
    let svc_touched = touched.iter().filter(|c| c.contains("-SVC-")).count();
    let sep_touched = touched.iter().filter(|c| c.contains("-SEP-")).count();
    assert_eq!((svc_touched, sep_touched), (1, 4), "{touched:?}");
    // Someone flushes a chain of b: the resync (ruleset generation moved) restores it.
    let save = || {
        let s = ns.sh("iptables-save -t nat");
        let mut l: Vec<String> = s
            .lines()
            .filter(|l| l.contains("SKIFF"))
            .map(|l| l.split(" [").next().unwrap().to_string())
            .collect();
        l.sort();
        l
    };
    let good = save();
    let svc_b = good
        .iter()
        .find(|l| l.contains("ns/b:") && l.contains("-j SKIFF-SVC-"))
        .and_then(|l| l.rsplit("-j ").next())
        .unwrap()
        .to_string();
    ns.sh(&format!("iptables -t nat -F {svc_b}"));
    assert_ne!(save(), good);
    let r = ns.run(move || {
        let mut a = a;
        a.resync(&ports_changed()).unwrap()
    });
    assert!(r.read_back, "{r:?}");
    assert_eq!(save(), good);
    ns.run(move || cleanup(Mode::Iptables, &opts()).unwrap());
    assert!(!ns.sh("iptables-save -t nat").contains("SKIFF-"));
}

fn ports_changed() -> Vec<ServicePort> {
    let mut p = ports();
    p[4].endpoints[1].0 = "10.1.0.9".parse().unwrap();
    p
}

/// The netlink batches write, rule for rule and element for element, what `nft -f`
/// writes from the same table: the two tables list the same (nft decompiles our
/// expressions into the same text, and keeps the same comments). The pick chains' rule
/// is the one nft cannot parse (numgen as the mark-typed part of a key): it is checked
/// against the text it stands for.
#[test]
#[ignore = "needs root and nft"]
fn netlink_batches_write_what_nft_writes() {
    require();
    let ns = Netns::new("nl");
    let o = Options {
        // Not on a byte boundary: the masquerade rule needs a bitwise mask.
        cluster_cidr: Some("10.0.0.0/12".into()),
        table: "by-netlink".into(),
    };
    let mut p = ports();
    // One endpoint changed after the first sync (flushes and new rules in a chain,
    // replaced elements).
    p[0].endpoints[1].0 = "10.1.0.8".parse().unwrap();
    p[4].endpoints[1].0 = "10.1.0.9".parse().unwrap();
    ns.run({
        let (o, p) = (o.clone(), p.clone());
        move || {
            let mut a = Applier::new(Mode::Nftables, o);
            // The fixed part first (always nft -f), then every service port as one
            // incremental sync: a batch.
            a.sync(&[]).unwrap();
            let r = a.sync(&ports()).unwrap();
            assert!(r.changed() && !r.read_back, "{r:?}");
            a.sync(&p).unwrap();
        }
    });
    // The same table through nft, pick chains left empty.
    let mut wanted = layout::desired(&p, &o);
    let picks: Vec<(String, String)> = wanted
        .chains
        .iter_mut()
        .filter(|(name, _)| name.starts_with("pick-"))
        .map(|(name, c)| (name.clone(), std::mem::take(&mut c.rules).remove(0).text))
        .collect();
    assert!(picks.len() >= 3, "{picks:?}");
    let text = table::Edits::between(&table::Table::default(), &wanted).render("by-nft");
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("add table ip by-nft\n{text}").as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(st.success(), "nft -f of\n{text}");
    let by_netlink = ns.sh("nft list table ip by-netlink");
    assert!(by_netlink.contains("dnat to 10.1.0.8:8080"), "{by_netlink}");
    for (name, text) in &picks {
        let body = ns.sh(&format!("nft list chain ip by-netlink {name}"));
        assert!(
            body.contains(&format!("\t\t{text} comment ")),
            "{text}\n{body}"
        );
    }
    let without_picks = |listing: &str| -> Vec<Vec<String>> {
        normalized(listing)
            .into_iter()
            .filter(|b| !b[0].starts_with("chain pick-"))
            .collect()
    };
    assert_eq!(
        without_picks(&by_netlink.replace("by-netlink", "T")),
        without_picks(&ns.sh("nft list table ip by-nft").replace("by-nft", "T"))
    );
}

/// Thousands of service ports in one batch (element lists far beyond one netlink
/// attribute) all arrive: the table read back is complete.
#[test]
#[ignore = "needs root and nft"]
fn thousands_of_service_ports_arrive_complete() {
    require();
    let ns = Netns::new("big");
    let many: Vec<ServicePort> = (0..3000u32)
        .map(|i| {
            let mut p = port(
                &format!("s{i}"),
                &std::net::Ipv4Addr::from(0x0a60_0000 + i).to_string(),
                &[],
            );
            p.node_port = (i < 2000).then_some(30000 + i as u16);
            p.endpoints = (0..2)
                .map(|e| (std::net::Ipv4Addr::from(0x0a01_0000 + 2 * i + e), 8080))
                .collect();
            p
        })
        .collect();
    let o = opts();
    let t = o.table.clone();
    let ports = many.clone();
    let r = ns.run(move || Applier::new(Mode::Nftables, o).sync(&ports).unwrap());
    assert!(r.changed());
    let kernel = table::parse_listing(&ns.sh(&format!("nft list table ip {t}")));
    assert_eq!(kernel.sets["service-ips"].elements.len(), 3000);
    assert_eq!(kernel.sets["hairpin"].elements.len(), 6000);
    assert_eq!(kernel.sets[layout::ADDRESS_ENDPOINTS].elements.len(), 6000);
    assert_eq!(kernel.sets[layout::NODEPORT_ENDPOINTS].elements.len(), 4000);
    let edits = table::Edits::between(&kernel, &layout::desired(&many, &opts()));
    assert!(
        edits.is_empty(),
        "{} edits",
        edits.chains_touched + edits.elements_touched
    );
    ns.run(move || cleanup(Mode::Nftables, &opts()).unwrap());
}

/// Two Services given the same external IP and port (the API does not forbid it): both
/// are programmed, the key goes to one of them (the smallest service port id) and,
/// when that one goes, to the other; nothing fails.
#[test]
#[ignore = "needs root and nft"]
fn colliding_external_ips_do_not_break_the_sync() {
    require();
    let ns = Netns::new("co");
    let t = opts().table;
    let mut x = port("x", "10.96.0.20", &["10.1.0.20"]);
    x.external_ips = vec!["192.0.2.1".parse().unwrap()];
    let mut y = port("y", "10.96.0.21", &["10.1.0.21"]);
    y.external_ips = x.external_ips.clone();
    let both = vec![x, y.clone()];
    let mut a = ns.run(move || {
        let mut a = Applier::new(Mode::Nftables, opts());
        a.sync(&both).unwrap();
        a
    });
    let map = || {
        ns.sh(&format!(
            "nft list map ip {t} {}",
            layout::ADDRESS_ENDPOINTS
        ))
    };
    let key = "192.0.2.1 . tcp . 80 . 0x00000000 : ";
    assert!(
        map().contains(&format!("{key}10.1.0.20 . 8080")),
        "{}",
        map()
    );
    // x goes: y gets the key.
    ns.run(move || a.sync(&[y]).unwrap());
    assert!(
        map().contains(&format!("{key}10.1.0.21 . 8080")),
        "{}",
        map()
    );
    ns.run(move || cleanup(Mode::Nftables, &opts()).unwrap());
}

/// Someone edits the table while the proxy repairs it: an element it read back is gone
/// by the time its edits are committed (or one appears), so the edits no longer apply.
/// The repair must still converge (the table written whole in one transaction) instead
/// of failing now and at every later resync, leaving Services broken.
#[test]
#[ignore = "needs root and nft"]
fn a_repair_raced_by_another_writer_still_converges() {
    require();
    let ns = Netns::new("rc");
    let o = opts();
    let t = o.table.clone();
    let mut a = ns.run({
        let o = o.clone();
        move || {
            let mut a = Applier::new(Mode::Nftables, o);
            a.sync(&ports()).unwrap();
            a
        }
    });
    let good = ns.sh(&format!("nft list table ip {t}"));
    // The other writer: a foreign element in and out of the service map, as fast as nft
    // goes, for a few seconds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (name, t, stop) = (ns.0.clone(), t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("ip")
                    .args(["netns", "exec", &name, "sh", "-c"])
                    .arg(format!(
                        "nft add element ip {t} service-ips '{{ 10.96.0.97 . tcp . 80 : goto reject-chain }}'; \
                         nft delete element ip {t} service-ips '{{ 10.96.0.97 . tcp . 80 }}'"
                    ))
                    .status();
                n += 1;
            }
            n
        })
    };
    let results = ns.run(move || {
        let mut errors = Vec::new();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(4);
        let mut rounds = 0;
        while std::time::Instant::now() < end {
            if let Err(e) = a.resync(&ports()) {
                errors.push(e.to_string());
            }
            rounds += 1;
        }
        (errors, rounds, a)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let toggles = writer.join().unwrap();
    let (errors, rounds, mut a) = results;
    assert!(
        toggles > 5 && rounds > 5,
        "{toggles} toggles, {rounds} resyncs"
    );
    assert!(
        errors.is_empty(),
        "{} of {rounds} resyncs failed: {:?}",
        errors.len(),
        errors.first()
    );
    // Quiet again: one resync leaves exactly the wanted table.
    ns.run(move || a.resync(&ports()).unwrap());
    assert_eq!(
        normalized(&ns.sh(&format!("nft list table ip {t}"))),
        normalized(&good)
    );
    ns.run(move || cleanup(Mode::Nftables, &opts()).unwrap());
}
