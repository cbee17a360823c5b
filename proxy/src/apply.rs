//! Putting rules into the kernel through either mode's proxier, and removing them.

use crate::model::ServicePort;
use crate::nftables::Outcome;
use crate::{iptables, nftables, Options};
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Nftables,
    Iptables,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("run {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0} failed: {1}")]
    Failed(String, String),
}

pub(crate) fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, ApplyError> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApplyError::Spawn(what.clone(), e))?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| ApplyError::Spawn(what.clone(), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ApplyError::Spawn(what.clone(), e))?;
    if !out.status.success() {
        return Err(ApplyError::Failed(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The proxier of either mode.
pub enum Applier {
    Nftables(nftables::Nftables),
    Iptables(iptables::Iptables),
}

impl Applier {
    pub fn new(mode: Mode, opts: Options) -> Applier {
        match mode {
            Mode::Nftables => Applier::Nftables(nftables::Nftables::new(opts)),
            Mode::Iptables => Applier::Iptables(iptables::Iptables::new(opts)),
        }
    }

    /// Program these service ports, touching only what changed since the last sync
    /// (the first one compares with, and repairs, what the kernel holds).
    pub fn sync(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        match self {
            Applier::Nftables(n) => n.sync(ports),
            Applier::Iptables(i) => i.sync(ports),
        }
    }

    /// The periodic sync: also repairs changes someone else made to our rules.
    pub fn resync(&mut self, ports: &[ServicePort]) -> Result<Outcome, ApplyError> {
        match self {
            Applier::Nftables(n) => n.resync(ports),
            Applier::Iptables(i) => i.resync(ports),
        }
    }
}

/// Remove every rule of `mode` (`--cleanup`, and the other mode at start).
pub fn cleanup(mode: Mode, opts: &Options) -> Result<(), ApplyError> {
    match mode {
        Mode::Nftables => {
            run("nft", &["-f", "-"], Some(&nftables::cleanup(opts)))?;
        }
        Mode::Iptables => {
            for (table, chain, rule) in iptables::jumps() {
                let mut del = vec!["-w", "-t", table, "-D", chain];
                del.extend(&rule);
                while run("iptables", &del, None).is_ok() {}
            }
            for table in ["nat", "filter"] {
                let chains = iptables::skiff_chains(table)?;
                if chains.is_empty() {
                    continue;
                }
                let mut text = format!("*{table}\n");
                for c in &chains {
                    text.push_str(&format!(":{c} - [0:0]\n"));
                }
                for c in &chains {
                    text.push_str(&format!("-X {c}\n"));
                }
                text.push_str("COMMIT\n");
                run("iptables-restore", &["--noflush"], Some(&text))?;
            }
        }
    }
    Ok(())
}
