//! Runtime logging to `--log` in text or JSON lines. containerd's shim reads the last
//! `{"level":"error","msg":...}` line of this file to report why a command failed.

use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    path: Option<std::path::PathBuf>,
    format: Format,
    debug: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

pub fn init(path: Option<std::path::PathBuf>, format: Format, debug: bool) {
    let _ = LOGGER.set(Logger {
        path,
        format,
        debug,
    });
}

fn write(level: &str, msg: &str) {
    let Some(l) = LOGGER.get() else {
        if level != "debug" {
            eprintln!("{level}: {msg}");
        }
        return;
    };
    if level == "debug" && !l.debug {
        return;
    }
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let line = match l.format {
        Format::Json => format!(
            "{}\n",
            serde_json::json!({"level": level, "msg": msg, "time": time})
        ),
        Format::Text => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
    };
    match &l.path {
        Some(p) => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        // Without a log file, people read stderr: keep it plain.
        None => eprintln!("skiff-runtime: {level}: {msg}"),
    }
}

pub fn error(msg: &str) {
    write("error", msg)
}
pub fn warn(msg: &str) {
    write("warning", msg)
}
pub fn debug(msg: &str) {
    write("debug", msg)
}

/// Whether errors already go to stderr (no --log file given).
pub fn to_stderr() -> bool {
    LOGGER.get().is_none_or(|l| l.path.is_none())
}
