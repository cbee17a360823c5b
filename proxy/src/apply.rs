//! Putting rules into the kernel: `nft -f -` (one transaction) or `iptables-restore
//! --noflush` plus the jumps from the built-in chains. A sync whose rules equal the last
//! ones applied is skipped.

use crate::model::ServicePort;
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

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, ApplyError> {
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

pub struct Applier {
    pub mode: Mode,
    pub opts: Options,
    /// iptables: the rules last applied.
    last: Option<String>,
    /// nftables: the service ports the table was last brought to.
    last_ports: Option<nftables::Ports>,
}

impl Applier {
    pub fn new(mode: Mode, opts: Options) -> Applier {
        Applier {
            mode,
            opts,
            last: None,
            last_ports: None,
        }
    }

    /// Program these service ports; Ok(false) when nothing changed.
    pub fn sync(&mut self, ports: &[ServicePort]) -> Result<bool, ApplyError> {
        match self.mode {
            Mode::Nftables => {
                let new = nftables::by_id(ports);
                let text = match self.last_ports.take() {
                    // Only what changed.
                    Some(old) => nftables::render_update(&old, &new, &self.opts),
                    None => nftables::render(ports, &self.opts),
                };
                if text.is_empty() {
                    self.last_ports = Some(new);
                    return Ok(false);
                }
                // On failure last_ports stays None: the next sync rewrites the table.
                run("nft", &["-f", "-"], Some(&text))?;
                self.last_ports = Some(new);
            }
            Mode::Iptables => {
                let desired = iptables::render(ports, &self.opts, &[]);
                if self.last.as_ref() == Some(&desired) {
                    return Ok(false);
                }
                self.last = None;
                let existing = skiff_chains("nat")?;
                let text = iptables::render(ports, &self.opts, &existing);
                run("iptables-restore", &["--noflush"], Some(&text))?;
                ensure_jumps()?;
                self.last = Some(desired);
            }
        }
        Ok(true)
    }

    /// Forget what was applied (the next sync rewrites even if equal), e.g. after
    /// someone else flushed the rules.
    pub fn invalidate(&mut self) {
        self.last = None;
        self.last_ports = None;
    }
}

/// Our chains in an iptables table.
fn skiff_chains(table: &str) -> Result<Vec<String>, ApplyError> {
    let out = run("iptables-save", &["-t", table], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("SKIFF-"))
        .map(String::from)
        .collect())
}

fn ensure_jumps() -> Result<(), ApplyError> {
    for (table, chain, rule) in iptables::jumps() {
        let mut check = vec!["-w", "-t", table, "-C", chain];
        check.extend(&rule);
        if run("iptables", &check, None).is_err() {
            let mut insert = vec!["-w", "-t", table, "-I", chain, "1"];
            insert.extend(&rule);
            run("iptables", &insert, None)?;
        }
    }
    Ok(())
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
                let chains = skiff_chains(table)?;
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
