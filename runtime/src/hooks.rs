//! OCI hooks: each runs with the container state JSON on stdin and its own timeout.

use crate::error::{Error, Result};
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `hooks` in order; the first failure stops the list.
pub fn run(kind: &str, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    run_with_env(kind, hooks, state, None)
}

/// As `run`; a hook without an `env` of its own gets `default_env` (startContainer hooks
/// get the container process's environment).
pub fn run_with_env(
    kind: &str,
    hooks: &[Hook],
    state: &serde_json::Value,
    default_env: Option<&[String]>,
) -> Result<()> {
    let input = serde_json::to_vec(state).expect("state serializes");
    for (i, h) in hooks.iter().enumerate() {
        run_one(kind, i, h, &input, default_env)?;
    }
    Ok(())
}

fn run_one(
    kind: &str,
    i: usize,
    h: &Hook,
    input: &[u8],
    default_env: Option<&[String]>,
) -> Result<()> {
    let fail = |m: String| Error::Hook(format!("{kind} hook #{i} ({}): {m}", h.path().display()));
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped());
    let env = match (h.env(), default_env) {
        (Some(own), _) => own.as_slice(),
        (None, Some(d)) => d,
        (None, None) => &[],
    };
    for e in env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().map_err(|e| fail(format!("start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(input);
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut delay = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(fail(format!("exited with {st}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                h.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}
