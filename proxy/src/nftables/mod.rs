//! The nftables mode: a table of our own (layout in [`layout`]), changed one
//! transaction at a time and only where it differs from what is wanted.
//!
//! After the first sync the proxier remembers each service port's fragment; a sync
//! compares the new service ports with the remembered ones and edits only the chains
//! and elements of those that changed. A resync (every --sync-period) first asks the
//! kernel for the ruleset generation: unchanged since our last commit means nobody
//! touched any rule, and there is nothing to read. Otherwise, and at start and after a
//! failed transaction, the table is read back (`nft list table`) and repaired in place:
//! only what differs is rewritten, and the table itself is never deleted (services
//! keep working across a restart). `--cleanup` is the only thing that removes it.

pub mod layout;
pub mod netlink;
pub mod service_rule;
pub mod table;

use crate::apply::{run, ApplyError};
use crate::generation;
use crate::model::ServicePort;
use crate::Options;
use layout::{fragment, Claims, Fragment};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use table::{Edits, Table};

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Chains written or removed.
    pub chains: usize,
    /// Map and set elements added or removed.
    pub elements: usize,
    /// The table was read back from the kernel and compared.
    pub read_back: bool,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.chains + self.elements > 0
    }
}

/// The service ports last programmed, with their fragments and who claims each
/// element.
#[derive(Default)]
struct Programmed {
    ports: HashMap<String, (ServicePort, Fragment)>,
    claims: Claims,
}

pub struct Nftables {
    opts: Options,
    /// None until the table has been read back and repaired (start, failure).
    programmed: Option<Programmed>,
    /// The ruleset generation our last commit left.
    generation: Option<u32>,
}

impl Nftables {
    pub fn new(opts: Options) -> Nftables {
        Nftables {
            opts,
            programmed: None,
            generation: None,
        }
    }

    /// Program these service ports, editing only what changed since the last sync.
    pub fn sync(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        let Some(mut prog) = self.programmed.take() else {
            return self.repair(ports);
        };
        let new: HashMap<String, &ServicePort> = ports.iter().map(|p| (p.id(), p)).collect();
        let mut edits = Edits::default();
        let mut forgotten = BTreeSet::new();
        let gone: Vec<String> = prog
            .ports
            .keys()
            .filter(|id| !new.contains_key(*id))
            .cloned()
            .collect();
        let mut changes: Vec<(String, Option<&ServicePort>)> =
            gone.into_iter().map(|id| (id, None)).collect();
        for (id, p) in &new {
            if prog.ports.get(id).map(|(old, _)| old) != Some(*p) {
                changes.push((id.clone(), Some(*p)));
            }
        }
        let mut touched = BTreeMap::new();
        for (id, p) in changes {
            let old = prog.ports.remove(&id);
            let new_frag = p.map(|p| fragment(p, &self.opts));
            let empty = Fragment::default();
            let old_frag = old.as_ref().map_or(&empty, |(_, f)| f);
            let new_f = new_frag.as_ref().unwrap_or(&empty);
            diff_chains(&mut edits, old_frag, new_f);
            prog.claims.change(&id, old_frag, new_f, Some(&mut touched));
            if let (Some((o, _)), Some(n)) = (&old, p) {
                if o.affinity_seconds.is_some() {
                    forgotten.extend(o.endpoints.iter().filter(|e| !n.endpoints.contains(e)));
                }
            }
            if let (Some(p), Some(f)) = (p, new_frag) {
                prog.ports.insert(id, (p.clone(), f));
            }
        }
        prog.claims.edits(touched, &mut edits);
        let outcome = Outcome {
            chains: edits.chains_touched,
            elements: edits.elements_touched,
            read_back: false,
        };
        if !edits.is_empty() {
            // On failure the table is read back and repaired by the next sync.
            self.commit(edits, false)?;
        }
        if !forgotten.is_empty() {
            self.forget_affinity(&forgotten)?;
        }
        self.programmed = Some(prog);
        Ok(outcome)
    }

    /// The periodic check: if any rule in the kernel changed since our last commit,
    /// read the table back and repair what differs; then sync as usual.
    pub fn resync(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        let now = generation::current().map_err(|e| ApplyError::Spawn("GETGEN".into(), e))?;
        if self.generation != Some(now) {
            self.programmed = None;
        }
        self.sync(ports)
    }

    /// Read the table back and bring it to these service ports, touching only what
    /// differs (the table is made if it is missing).
    fn repair(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        let t = self.opts.table.clone();
        let (kernel, missing) = match run("nft", &["list", "table", "ip", &t], None) {
            Ok(text) => (table::parse_listing(&text), false),
            Err(ApplyError::Failed(_, e)) if e.contains("No such file or directory") => {
                (Table::default(), true)
            }
            Err(e) => return Err(e),
        };
        let (desired, ports, claims) = layout::assemble(ports, &self.opts);
        let edits = Edits::between(&kernel, &desired);
        let prog = Programmed { ports, claims };
        let outcome = Outcome {
            chains: edits.chains_touched,
            elements: edits.elements_touched,
            read_back: true,
        };
        if !edits.is_empty() {
            self.commit(edits, missing)?;
        } else {
            self.generation = generation::current().ok();
        }
        self.programmed = Some(prog);
        Ok(outcome)
    }

    /// Commits the edits: what only nft can write through `nft -f` (`create`: the
    /// table is made first), then the service-port edits as one netlink batch. Remembers
    /// the generation this produced when no one else committed in between (otherwise
    /// the next resync reads the table back).
    fn commit(&mut self, edits: Edits, create: bool) -> Result<(), ApplyError> {
        let t = self.opts.table.clone();
        let before = generation::current().ok();
        self.generation = None;
        let (text, batch) = if self.opts.netlink {
            let (text, service) = edits.split();
            match service.batch(&t) {
                Some(b) => (text, Some(b)),
                // Something a batch cannot say: everything through nft, in one go.
                None => (text.merge(service), None),
            }
        } else {
            (edits, None)
        };
        let mut commits = 0u32;
        if create || !text.is_empty() {
            let prefix = if create {
                format!("add table ip {t}\n")
            } else {
                String::new()
            };
            run("nft", &["-f", "-"], Some(&(prefix + &text.render(&t))))?;
            commits += 1;
        }
        if let Some(b) = batch.filter(|b| !b.is_empty()) {
            b.commit()
                .map_err(|e| ApplyError::Failed("nf_tables batch".into(), e.to_string()))?;
            commits += 1;
        }
        let after = generation::current().ok();
        if let (Some(b), Some(a)) = (before, after) {
            if a == b.wrapping_add(commits) {
                self.generation = Some(a);
            }
        }
        Ok(())
    }

    /// Clients remembered for endpoints that are gone would keep being sent there
    /// until their entry times out: remove those entries.
    fn forget_affinity(&mut self, gone: &BTreeSet<(Ipv4Addr, u16)>) -> Result<(), ApplyError> {
        let t = self.opts.table.clone();
        let text = run("nft", &["list", "map", "ip", &t, layout::AFFINITY], None)?;
        let set = table::parse_listing(&text);
        let mut edits = Edits::default();
        for e in set
            .sets
            .get(layout::AFFINITY)
            .map(|s| s.elements.iter())
            .into_iter()
            .flatten()
        {
            // `client . vip . port timeout 10m expires 9m : ip . port`
            let Some((key, data)) = e.split_once(" : ") else {
                continue;
            };
            let mut d = data.split(" . ");
            let target = (
                d.next().and_then(|s| s.trim().parse().ok()),
                d.next().and_then(|s| s.trim().parse().ok()),
            );
            if let (Some(ip), Some(port)) = target {
                if gone.contains(&(ip, port)) {
                    let key = key.split(" timeout ").next().unwrap_or(key);
                    let key = key.split(" expires ").next().unwrap_or(key);
                    edits.delete_element(layout::AFFINITY, key);
                }
            }
        }
        if !edits.is_empty() {
            self.commit(edits, false)?;
        }
        Ok(())
    }
}

/// The chains of one service port, from its old fragment to its new one.
fn diff_chains(edits: &mut Edits, old: &Fragment, new: &Fragment) {
    let names: BTreeSet<&String> = old
        .chains
        .iter()
        .chain(&new.chains)
        .map(|(n, _)| n)
        .collect();
    for name in names {
        let find = |f: &'_ Fragment| {
            f.chains
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c.clone())
        };
        edits.chain(name, find(old).as_ref(), find(new).as_ref());
    }
}

/// The `nft -f` input that removes the table.
pub fn cleanup(o: &Options) -> String {
    format!("add table ip {t}\ndelete table ip {t}\n", t = o.table)
}
