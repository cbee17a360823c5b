//! A table as data: its sets and maps (with their elements) and its chains (with their
//! rules), the edits that turn one table into another as one `nft -f` transaction,
//! and the same model read back from `nft list table`, so a resync compares what the
//! kernel holds with what is wanted and touches only what differs.
//!
//! Rules are compared by their comment: every rule we write ends in
//! `comment "LABEL FINGERPRINT"`, the fingerprint a hash of the rule's text as we wrote
//! it. nft prints rules in its own canonical form, but keeps comments verbatim, so a
//! rule changed, added or removed behind our back shows up as a different comment
//! sequence. Base chains carry their header's fingerprint as the chain's comment.

use super::netlink::{self, Batch};
use super::service_rule::ServiceRule;
use crate::model::hash;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// nft syntax, without the comment.
    pub text: String,
    /// What the rule is for (a Service, or the table's fixed part).
    pub label: String,
    /// A service port's rule as data (what netlink batches are made from).
    pub service: Option<ServiceRule>,
}

impl Rule {
    pub fn new(label: &str, text: String) -> Rule {
        Rule {
            text,
            label: label.to_string(),
            service: None,
        }
    }

    pub fn service(label: &str, rule: ServiceRule) -> Rule {
        Rule {
            text: rule.text(),
            label: label.to_string(),
            service: Some(rule),
        }
    }

    /// `LABEL FINGERPRINT`: what identifies the rule in a listing.
    pub fn comment(&self) -> String {
        format!("{} {}", self.label, hash(&self.text))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// A base chain's header (`type nat hook output priority -100; policy accept;`),
    /// as a rule labelled `hook`: its comment becomes the chain's comment.
    pub header: Option<Rule>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn base(header: &str) -> Chain {
        Chain {
            header: Some(Rule::new("hook", header.to_string())),
            rules: Vec::new(),
        }
    }

    fn same_header(&self, other: &Chain) -> bool {
        self.header.as_ref().map(identity) == other.header.as_ref().map(identity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Set {
    /// `type ...; flags ...;`
    pub decl: String,
    /// Elements as nft prints them (`10.96.0.1 . tcp . 80 : goto chain`).
    pub elements: BTreeSet<String>,
    /// Filled from the packet path (affinity): its elements are not compared.
    pub dynamic: bool,
}

/// What a table holds, as far as we compare it. Kernel-read rules have an empty text
/// and only their comment (in `label`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

/// A rule as read back: its comment is all we compare.
fn identity(r: &Rule) -> String {
    if r.text.is_empty() {
        r.label.clone()
    } else {
        r.comment()
    }
}

/// The commands of one transaction, in an order the kernel accepts: references go
/// before what they refer to, new things come before what refers to them.
#[derive(Debug, Default)]
pub struct Edits {
    del_elems: Vec<(String, String)>,
    flush: Vec<String>,
    del_chains: Vec<String>,
    del_sets: Vec<String>,
    add_sets: Vec<(String, String)>,
    add_chains: Vec<(String, Option<Rule>)>,
    add_rules: Vec<(String, Rule)>,
    add_elems: Vec<(String, String)>,
    /// Chains changed, added or removed (for the log and the metrics).
    pub chains_touched: usize,
    pub elements_touched: usize,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.del_elems.is_empty()
            && self.flush.is_empty()
            && self.del_chains.is_empty()
            && self.del_sets.is_empty()
            && self.add_sets.is_empty()
            && self.add_chains.is_empty()
            && self.add_rules.is_empty()
            && self.add_elems.is_empty()
    }

    /// Bring chain `name` from `old` to `new`; an unchanged chain is not touched.
    pub fn chain(&mut self, name: &str, old: Option<&Chain>, new: Option<&Chain>) {
        let same = match (old, new) {
            (Some(o), Some(n)) => {
                o.same_header(n)
                    && o.rules.len() == n.rules.len()
                    && o.rules
                        .iter()
                        .zip(&n.rules)
                        .all(|(a, b)| identity(a) == identity(b))
            }
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.chains_touched += 1;
        match (old, new) {
            (Some(o), Some(n)) if o.same_header(n) => {
                self.flush.push(name.to_string());
            }
            (Some(_), Some(_)) => {
                // A base chain whose hook changed: made again.
                self.flush.push(name.to_string());
                self.del_chains.push(name.to_string());
                self.add_chains
                    .push((name.to_string(), new.unwrap().header.clone()));
            }
            (Some(_), None) => {
                self.flush.push(name.to_string());
                self.del_chains.push(name.to_string());
            }
            (None, Some(n)) => self.add_chains.push((name.to_string(), n.header.clone())),
            (None, None) => {}
        }
        if let Some(n) = new {
            for r in &n.rules {
                self.add_rules.push((name.to_string(), r.clone()));
            }
        }
    }

    pub fn add_element(&mut self, set: &str, e: &str) {
        self.elements_touched += 1;
        self.add_elems.push((set.to_string(), e.to_string()));
    }

    pub fn delete_element(&mut self, set: &str, e: &str) {
        self.elements_touched += 1;
        self.del_elems.push((set.to_string(), e.to_string()));
    }

    /// Bring set `name`'s elements from `old` to `new`.
    pub fn elements(&mut self, name: &str, old: &BTreeSet<String>, new: &BTreeSet<String>) {
        for e in old.difference(new) {
            self.delete_element(name, e);
        }
        for e in new.difference(old) {
            self.add_element(name, e);
        }
    }

    /// Everything that differs between two whole tables.
    pub fn between(old: &Table, new: &Table) -> Edits {
        let mut e = Edits::default();
        for (name, set) in &new.sets {
            match old.sets.get(name) {
                Some(_) if set.dynamic => {}
                Some(o) => e.elements(name, &o.elements, &set.elements),
                None => {
                    e.add_sets.push((name.clone(), set.decl.clone()));
                    if !set.dynamic {
                        e.elements(name, &BTreeSet::new(), &set.elements);
                    }
                }
            }
        }
        for name in old.sets.keys() {
            if !new.sets.contains_key(name) {
                e.del_sets.push(name.clone());
            }
        }
        let names: BTreeSet<&String> = old.chains.keys().chain(new.chains.keys()).collect();
        for name in names {
            e.chain(name, old.chains.get(name), new.chains.get(name));
        }
        e
    }

    /// These edits followed by `other`'s, kind by kind.
    pub fn merge(mut self, other: Edits) -> Edits {
        self.del_elems.extend(other.del_elems);
        self.flush.extend(other.flush);
        self.del_chains.extend(other.del_chains);
        self.del_sets.extend(other.del_sets);
        self.add_sets.extend(other.add_sets);
        self.add_chains.extend(other.add_chains);
        self.add_rules.extend(other.add_rules);
        self.add_elems.extend(other.add_elems);
        self.chains_touched += other.chains_touched;
        self.elements_touched += other.elements_touched;
        self
    }

    /// Splits the edits into what only nft can write (sets, base chains, the fixed
    /// part's rules; committed first) and the service-port edits a netlink batch can
    /// carry (committed second: they refer to the fixed part, never the reverse).
    pub fn split(self) -> (Edits, Edits) {
        let fixed: BTreeSet<String> = self
            .add_chains
            .iter()
            .filter(|(_, h)| h.is_some())
            .map(|(c, _)| c.clone())
            .chain(
                self.add_rules
                    .iter()
                    .filter(|(_, r)| r.service.is_none())
                    .map(|(c, _)| c.clone()),
            )
            .collect();
        let mut text = Edits {
            add_sets: self.add_sets,
            del_sets: self.del_sets,
            ..Edits::default()
        };
        let mut batch = Edits::default();
        let side = |c: &String| fixed.contains(c);
        for c in self.flush {
            if side(&c) {
                text.flush.push(c)
            } else {
                batch.flush.push(c)
            }
        }
        for c in self.del_chains {
            if side(&c) {
                text.del_chains.push(c)
            } else {
                batch.del_chains.push(c)
            }
        }
        for (c, h) in self.add_chains {
            if side(&c) {
                text.add_chains.push((c, h))
            } else {
                batch.add_chains.push((c, h))
            }
        }
        for (c, r) in self.add_rules {
            if side(&c) {
                text.add_rules.push((c, r))
            } else {
                batch.add_rules.push((c, r))
            }
        }
        for (set, e) in self.del_elems {
            if netlink::element(&e).is_some() {
                batch.del_elems.push((set, e));
            } else {
                text.del_elems.push((set, e));
            }
        }
        batch.add_elems = self.add_elems;
        (text, batch)
    }

    /// The same edits as one netlink batch, when they are all service-port edits
    /// (chains without hooks, rules made from [`ServiceRule`]s, elements in our
    /// formats); None otherwise.
    pub fn batch(&self, t: &str) -> Option<Batch> {
        if !self.add_sets.is_empty()
            || !self.del_sets.is_empty()
            || self.add_chains.iter().any(|(_, h)| h.is_some())
            || self.add_rules.iter().any(|(_, r)| r.service.is_none())
        {
            return None;
        }
        let (del, add) = (group(&self.del_elems)?, group(&self.add_elems)?);
        let mut b = Batch::new(t);
        for (set, elems) in &del {
            b.elements(set, false, elems);
        }
        for c in &self.flush {
            b.flush_chain(c);
        }
        for c in &self.del_chains {
            b.delete_chain(c);
        }
        for (c, _) in &self.add_chains {
            b.add_chain(c);
        }
        for (c, r) in &self.add_rules {
            b.add_rule(c, r.service.as_ref()?, &r.comment());
        }
        for (set, elems) in &add {
            b.elements(set, true, elems);
        }
        Some(b)
    }

    /// The `nft -f` input for table `t` (which must exist).
    pub fn render(&self, t: &str) -> String {
        let mut s = String::new();
        for (set, el) in &self.del_elems {
            let _ = writeln!(s, "delete element ip {t} {set} {{ {} }}", key_of(el));
        }
        for c in &self.flush {
            let _ = writeln!(s, "flush chain ip {t} {c}");
        }
        for c in &self.del_chains {
            let _ = writeln!(s, "delete chain ip {t} {c}");
        }
        for set in &self.del_sets {
            let _ = writeln!(s, "delete set ip {t} {set}");
        }
        for (set, decl) in &self.add_sets {
            let kind = if decl.contains(" : ") { "map" } else { "set" };
            let _ = writeln!(s, "add {kind} ip {t} {set} {{ {decl} }}");
        }
        // New chains and rules in one table block: nft parses that faster than a
        // command per rule.
        let mut blocks: Vec<(&str, Option<&Rule>, Vec<&Rule>)> = self
            .add_chains
            .iter()
            .map(|(c, h)| (c.as_str(), h.as_ref(), Vec::new()))
            .collect();
        let mut index: std::collections::HashMap<&str, usize> =
            blocks.iter().enumerate().map(|(i, b)| (b.0, i)).collect();
        for (c, r) in &self.add_rules {
            match index.get(c.as_str()) {
                Some(i) => blocks[*i].2.push(r),
                None => {
                    index.insert(c, blocks.len());
                    blocks.push((c, None, vec![r]));
                }
            }
        }
        if !blocks.is_empty() {
            let _ = writeln!(s, "table ip {t} {{");
            for (c, header, rules) in blocks {
                let _ = writeln!(s, "\tchain {c} {{");
                if let Some(h) = header {
                    let _ = writeln!(s, "\t\tcomment \"{}\"\n\t\t{}", h.comment(), h.text);
                }
                for r in rules {
                    let _ = writeln!(s, "\t\t{} comment \"{}\"", r.text, r.comment());
                }
                s.push_str("\t}\n");
            }
            s.push_str("}\n");
        }
        // Elements of one set go in one command: far fewer lines for nft to parse.
        let mut by_set: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (set, el) in &self.add_elems {
            by_set.entry(set).or_default().push(el);
        }
        for (set, els) in by_set {
            for chunk in els.chunks(4096) {
                let _ = writeln!(s, "add element ip {t} {set} {{ {} }}", chunk.join(", "));
            }
        }
        s
    }
}

/// Elements by set, encoded; None if one is not in a format we write.
type Encoded<'a> = BTreeMap<&'a str, Vec<netlink::Element>>;

fn group(list: &[(String, String)]) -> Option<Encoded<'_>> {
    let mut by_set: Encoded = BTreeMap::new();
    for (set, e) in list {
        by_set.entry(set).or_default().push(netlink::element(e)?);
    }
    Some(by_set)
}

/// An element's key: what `delete element` names (without its data and comment).
pub fn key_of(element: &str) -> &str {
    let key = element.split(" : ").next().unwrap_or(element);
    key.split(" comment \"").next().unwrap_or(key)
}

/// `element` with the key fields at `protocols` named as we write them (`tcp`, not `6`).
fn protocols_by_name(element: &str, protocols: &[usize]) -> String {
    if protocols.is_empty() {
        return element.to_string();
    }
    let key = key_of(element);
    let rest = &element[key.len()..];
    let fields: Vec<&str> = key
        .split(" . ")
        .enumerate()
        .map(|(i, f)| match (protocols.contains(&i), f) {
            (true, "6") => "tcp",
            (true, "17") => "udp",
            (true, "132") => "sctp",
            _ => f,
        })
        .collect();
    format!("{}{rest}", fields.join(" . "))
}

/// The table as `nft list table` prints it. Rules become their comments; a rule without
/// one reads as `?` followed by its text, which never equals a rule we wrote.
pub fn parse_listing(text: &str) -> Table {
    let mut t = Table::default();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let l = line.trim();
        let (kind, name) = match l.strip_suffix(" {").and_then(|h| h.split_once(' ')) {
            Some((k @ ("set" | "map" | "chain"), n)) => (k, n.to_string()),
            _ => continue,
        };
        if kind == "chain" {
            let mut chain = Chain::default();
            let mut comment = None;
            for line in lines.by_ref() {
                let l = line.trim();
                if l == "}" {
                    break;
                }
                if let Some(c) = l
                    .strip_prefix("comment \"")
                    .and_then(|c| c.strip_suffix('"'))
                {
                    comment = Some(c.to_string());
                } else if l.starts_with("type ") {
                    // Compared through the chain's comment.
                    chain.header = Some(Rule::new("", String::new()));
                } else if !l.is_empty() {
                    let label = match l.rfind(" comment \"") {
                        Some(i) => l[i + 10..].trim_end_matches('"').to_string(),
                        None => format!("? {l}"),
                    };
                    chain.rules.push(Rule {
                        text: String::new(),
                        label,
                        service: None,
                    });
                }
            }
            if chain.header.is_some() {
                chain.header = Some(Rule {
                    text: String::new(),
                    label: comment.unwrap_or_else(|| "? no comment".into()),
                    service: None,
                });
            }
            t.chains.insert(name, chain);
        } else {
            let mut set = Set::default();
            let mut body = String::new();
            let mut in_elements = false;
            // Which key fields are protocols: nft prints them by number when the kernel
            // does not give the set's field types back (Debian's 6.1 does not), `6`
            // where we wrote `tcp`.
            let mut protocols: Vec<usize> = Vec::new();
            for line in lines.by_ref() {
                let l = line.trim();
                if l == "}" && !in_elements {
                    break;
                }
                if let Some(rest) = l.strip_prefix("elements = {") {
                    in_elements = true;
                    body.push_str(rest);
                } else if in_elements {
                    body.push(' ');
                    body.push_str(l);
                } else if l.starts_with("flags") && l.contains("dynamic") {
                    set.dynamic = true;
                } else if let Some(ty) = l.strip_prefix("type ") {
                    let key = ty.split(" : ").next().unwrap_or(ty);
                    protocols = key
                        .split(" . ")
                        .enumerate()
                        .filter(|(_, f)| f.trim() == "inet_proto")
                        .map(|(i, _)| i)
                        .collect();
                }
                if in_elements && body.trim_end().ends_with('}') {
                    in_elements = false;
                    let inner = body.trim_end().trim_end_matches('}');
                    set.elements = inner
                        .split(',')
                        .map(|e| protocols_by_name(e.trim(), &protocols))
                        .filter(|e| !e.is_empty())
                        .collect();
                }
            }
            t.sets.insert(name, set);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's 6.1 kernel does not give nft the sets' field types back, so nft prints a
    /// protocol in a concatenated key by number. Read back, the element must still equal
    /// the one we wrote (before, `6` was taken for a port: every repair deleted keys
    /// that did not exist and failed with ENOENT).
    #[test]
    fn protocols_printed_by_number_read_as_written() {
        let listing = "table ip t {\n\tmap address-endpoints {\n\t\ttype ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service\n\t\telements = { 10.96.0.5 . 6 . 80 . 0x00000000 : 10.1.0.5 . 8080,\n\t\t\t     192.0.2.10 . 17 . 53 . 0x00000001 : 10.1.0.3 . 8080 }\n\t}\n\tmap service-nodeports {\n\t\ttype inet_proto . inet_service : verdict\n\t\telements = { 132 . 30004 : drop, 6 . 30001 comment \"ns/a:http\" : goto external-x }\n\t}\n\tset hairpin {\n\t\ttype ipv4_addr . ipv4_addr\n\t\telements = { 10.1.0.6 . 10.1.0.6 }\n\t}\n}\n";
        let t = parse_listing(listing);
        let elements = |s: &str| t.sets[s].elements.iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            elements("address-endpoints"),
            [
                "10.96.0.5 . tcp . 80 . 0x00000000 : 10.1.0.5 . 8080",
                "192.0.2.10 . udp . 53 . 0x00000001 : 10.1.0.3 . 8080"
            ]
        );
        assert_eq!(
            elements("service-nodeports"),
            [
                "sctp . 30004 : drop",
                "tcp . 30001 comment \"ns/a:http\" : goto external-x"
            ]
        );
        assert_eq!(elements("hairpin"), ["10.1.0.6 . 10.1.0.6"]);
    }

    fn chain(rules: &[&str]) -> Chain {
        Chain {
            header: None,
            rules: rules
                .iter()
                .map(|r| Rule::new("ns/a", r.to_string()))
                .collect(),
        }
    }

    fn table(chains: &[(&str, Chain)], elements: &[&str]) -> Table {
        let mut t = Table::default();
        t.sets.insert(
            "service-ips".into(),
            Set {
                decl: "type ipv4_addr . inet_proto . inet_service : verdict;".into(),
                elements: elements.iter().map(|e| e.to_string()).collect(),
                dynamic: false,
            },
        );
        for (n, c) in chains {
            t.chains.insert(n.to_string(), c.clone());
        }
        t
    }

    #[test]
    fn edits_touch_only_what_differs_in_a_safe_order() {
        let el = "10.96.0.1 . tcp . 80 : goto svc-a";
        let old = table(
            &[("svc-a", chain(&["drop"])), ("svc-b", chain(&["accept"]))],
            &[el],
        );
        assert!(Edits::between(&old, &old).is_empty());
        let new = table(
            &[("svc-a", chain(&["reject"])), ("svc-c", chain(&["accept"]))],
            &["10.96.0.2 . tcp . 80 : goto svc-c"],
        );
        let e = Edits::between(&old, &new);
        assert_eq!((e.chains_touched, e.elements_touched), (3, 2));
        let text = e.render("t");
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} in\n{text}"))
        };
        // The element pointing at svc-b... goes before the chain does; svc-a is
        // flushed and refilled; svc-c exists before the element that jumps to it.
        let del_el = at("delete element ip t service-ips { 10.96.0.1 . tcp . 80 }");
        let flush_a = at("flush chain ip t svc-a");
        let del_b = at("delete chain ip t svc-b");
        let chain_c = at("\tchain svc-c {");
        let add_el = at("add element ip t service-ips { 10.96.0.2 . tcp . 80 : goto svc-c }");
        assert!(del_el < flush_a && flush_a < del_b && del_b < chain_c && chain_c < add_el);
        assert!(text.contains(&format!("\t\treject comment \"ns/a {}\"", hash("reject"))));
        assert!(!text.contains("svc-b {"), "{text}");
    }

    #[test]
    fn a_listing_reads_back_as_the_table_that_made_it() {
        let mut base = Chain::base("type nat hook output priority -100; policy accept;");
        base.rules = chain(&["jump services"]).rules;
        let wanted = table(
            &[
                ("nat-output", base.clone()),
                (
                    "service-X-ns/a/tcp/http",
                    chain(&[
                        "meta l4proto tcp numgen random mod 2 0 dnat to 10.1.0.1:80",
                        "drop",
                    ]),
                ),
            ],
            &[
                "10.96.0.1 . tcp . 80 : goto service-X-ns/a/tcp/http",
                "10.96.0.2 . udp . 53 : goto service-X-ns/a/tcp/http",
            ],
        );
        let r = &wanted.chains["service-X-ns/a/tcp/http"].rules;
        let h = base.header.as_ref().unwrap().comment();
        // As nft 1.0.6 prints it: canonical rule text, comments verbatim.
        let listing = format!(
            "table ip t {{\n\tmap service-ips {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\
             \t\telements = {{ 10.96.0.2 . udp . 53 : goto service-X-ns/a/tcp/http,\n\
             \t\t\t     10.96.0.1 . tcp . 80 : goto service-X-ns/a/tcp/http }}\n\t}}\n\n\
             \tchain nat-output {{\n\t\tcomment \"{h}\"\n\t\ttype nat hook output priority dstnat; policy accept;\n\
             \t\tjump services comment \"{}\"\n\t}}\n\n\
             \tchain service-X-ns/a/tcp/http {{\n\
             \t\tnumgen random mod 2 0 dnat to 10.1.0.1:80 comment \"{}\"\n\
             \t\tdrop comment \"{}\"\n\t}}\n}}\n",
            base.rules[0].comment(),
            r[0].comment(),
            r[1].comment()
        );
        let kernel = parse_listing(&listing);
        assert!(Edits::between(&kernel, &wanted).is_empty(), "{kernel:?}");
        // A rule someone added (no comment of ours) or a changed hook is a difference.
        let tampered = listing.replace(
            "\t\tdrop comment",
            "\t\tip saddr 1.2.3.4 accept\n\t\tdrop comment",
        );
        let e = Edits::between(&parse_listing(&tampered), &wanted);
        assert_eq!(e.chains_touched, 1);
        assert!(e
            .render("t")
            .contains("flush chain ip t service-X-ns/a/tcp/http"));
        let rehooked = listing.replace(&h, "hook SOMETHING");
        let text = Edits::between(&parse_listing(&rehooked), &wanted).render("t");
        assert!(text.contains("delete chain ip t nat-output"), "{text}");
        assert!(
            text.contains("type nat hook output priority -100;"),
            "{text}"
        );
    }
}
