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
use foldhash::HashMap;
use layout::{fragment, Claims, Fragment};
use std::collections::{BTreeMap, BTreeSet};
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
    /// How many service ports lead to each shared pick chain.
    picks: BTreeMap<(bool, u32), usize>,
}

impl Programmed {
    fn new(ports: HashMap<String, (ServicePort, Fragment)>, claims: Claims) -> Programmed {
        let mut picks = BTreeMap::new();
        for (_, f) in ports.values() {
            for p in &f.picks {
                *picks.entry(*p).or_default() += 1;
            }
        }
        Programmed {
            ports,
            claims,
            picks,
        }
    }

    /// A service port went from `old` to `new`: the pick chains it uses.
    fn change_picks(
        &mut self,
        old: &Fragment,
        new: &Fragment,
        touched: &mut BTreeMap<(bool, u32), bool>,
    ) {
        for p in old.picks.iter().chain(&new.picks) {
            let before = self.picks.get(p).is_some_and(|n| *n > 0);
            touched.entry(*p).or_insert(before);
        }
        for p in &old.picks {
            if let Some(n) = self.picks.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.picks.remove(p);
                }
            }
        }
        for p in &new.picks {
            *self.picks.entry(*p).or_default() += 1;
        }
    }

    /// Pick chains that came into use are made; those no longer used are removed
    /// (in the batch, after the elements leading to them).
    fn pick_edits(&self, touched: BTreeMap<(bool, u32), bool>, edits: &mut Edits) {
        for ((nodeport, n), before) in touched {
            let after = self.picks.contains_key(&(nodeport, n));
            if before == after {
                continue;
            }
            let body = layout::pick_chain_body(nodeport, n);
            let (old, new) = if after {
                (None, Some(&body))
            } else {
                (Some(&body), None)
            };
            edits.chain(&layout::pick_chain(nodeport, n), old, new);
        }
    }
}

/// Reads and commits a repair tries before the table is written anew.
const REPAIR_ATTEMPTS: usize = 3;

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
            let r = self.repair(ports);
            // A full sync frees millions of small blocks (the table, read back and
            // wanted); glibc merges them at its next large allocation, which was the
            // next single change's (~30 ms at 10,000 services × 10 endpoints).
            // SAFETY: malloc_trim only reorganises the allocator's free memory.
            unsafe { libc::malloc_trim(0) };
            return r;
        };
        let mut edits = Edits::default();
        let mut forgotten = BTreeSet::new();
        let mut changes = changed(&prog.ports, ports);
        let mut touched = BTreeMap::new();
        let mut picks = BTreeMap::new();
        for (id, p) in changes.drain(..) {
            let old = prog.ports.remove(&id);
            let new_frag = p.map(|p| fragment(p, &self.opts));
            let empty = Fragment::default();
            let old_frag = old.as_ref().map_or(&empty, |(_, f)| f);
            let new_f = new_frag.as_ref().unwrap_or(&empty);
            diff_chains(&mut edits, old_frag, new_f);
            prog.claims.change(&id, old_frag, new_f, Some(&mut touched));
            prog.change_picks(old_frag, new_f, &mut picks);
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
        prog.pick_edits(picks, &mut edits);
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
        let (desired, ports, claims) = layout::assemble(ports, &self.opts);
        let prog = Programmed::new(ports, claims);
        // Another writer may change the table between our read and our commit, and the
        // edits then no longer apply: read again and retry. If they still do not apply,
        // the listing and the kernel disagree about something that would fail every later
        // repair the same way: the table is written anew.
        let mut last = None;
        for _ in 0..REPAIR_ATTEMPTS {
            let (kernel, missing) = self.read_back()?;
            let edits = Edits::between(&kernel, &desired);
            let outcome = Outcome {
                chains: edits.chains_touched,
                elements: edits.elements_touched,
                read_back: true,
            };
            if edits.is_empty() {
                self.generation = generation::current().ok();
                self.programmed = Some(prog);
                return Ok(outcome);
            }
            match self.commit(edits, missing) {
                Ok(()) => {
                    self.programmed = Some(prog);
                    return Ok(outcome);
                }
                Err(e) => {
                    tracing::warn!(table = %t, error = %e, "repair did not apply: reading the table again");
                    last = Some(e);
                }
            }
        }
        tracing::error!(table = %t, error = ?last, "repair failed {REPAIR_ATTEMPTS} times: the table is written anew");
        let (_, missing) = self.read_back()?;
        if !missing {
            run("nft", &["delete", "table", "ip", &t], None)?;
        }
        let all = Edits::between(&Table::default(), &desired);
        let outcome = Outcome {
            chains: all.chains_touched,
            elements: all.elements_touched,
            read_back: true,
        };
        self.commit(all, true)?;
        self.programmed = Some(prog);
        Ok(outcome)
    }

    /// The table as the kernel has it, and whether it is missing.
    fn read_back(&self) -> Result<(Table, bool), ApplyError> {
        match run("nft", &["list", "table", "ip", &self.opts.table], None) {
            Ok(text) => Ok((table::parse_listing(&text), false)),
            Err(ApplyError::Failed(_, e)) if e.contains("No such file or directory") => {
                Ok((Table::default(), true))
            }
            Err(e) => Err(e),
        }
    }

    /// Commits the edits: what only nft can write through `nft -f` (`create`: the
    /// table is made first), then the service-port edits as one netlink batch. Remembers
    /// the generation this produced when no one else committed in between (otherwise
    /// the next resync reads the table back).
    fn commit(&mut self, edits: Edits, create: bool) -> Result<(), ApplyError> {
        let t = self.opts.table.clone();
        let before = generation::current().ok();
        self.generation = None;
        let (text, service) = edits.split();
        let (text, batch) = match service.batch(&t) {
            Some(b) => (text, Some(b)),
            // Something a batch cannot say: everything through nft, in one go.
            None => (text.merge(service), None),
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

/// The service ports that differ from those programmed: (id, None) for those gone.
/// Every port is looked at (a sync is given them all), so this is kept cheap: ids are
/// written into one buffer, and the gone are searched for only when some are.
fn changed<'a>(
    programmed: &HashMap<String, (ServicePort, Fragment)>,
    ports: &'a [ServicePort],
) -> Vec<(String, Option<&'a ServicePort>)> {
    let mut out = Vec::new();
    let mut id = String::new();
    let mut found = 0;
    for p in ports {
        id.clear();
        p.write_id(&mut id);
        match programmed.get(id.as_str()) {
            Some((old, _)) => {
                found += 1;
                if old != p {
                    out.push((id.clone(), Some(p)));
                }
            }
            None => out.push((id.clone(), Some(p))),
        }
    }
    if found < programmed.len() {
        let present: BTreeSet<String> = ports.iter().map(ServicePort::id).collect();
        out.extend(
            programmed
                .keys()
                .filter(|id| !present.contains(*id))
                .map(|id| (id.clone(), None)),
        );
    }
    out
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
