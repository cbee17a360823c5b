//! Typed errors. Every error names the step and the object it failed on,
//! e.g. "mount proc at /run/x/rootfs/proc: EPERM", so the CLI can print it as-is.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed while doing `step`.
    #[error("{step}: {errno}")]
    Sys {
        step: String,
        errno: nix::errno::Errno,
    },
    /// File I/O failed while doing `step`.
    #[error("{step}: {err}")]
    Io { step: String, err: std::io::Error },
    /// config.json (or a process.json / resources file) is not valid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The configuration asks for something this runtime does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("container \"{0}\" already exists")]
    Exists(String),
    /// The operation is not allowed in the container's current state.
    #[error("container \"{id}\" is {status}: {what}")]
    State {
        id: String,
        status: String,
        what: String,
    },
    /// A hook exited non-zero, timed out or could not run.
    #[error("{0}")]
    Hook(String),
    /// The container's init process reported a failure during setup.
    #[error("{0}")]
    Init(String),
    /// The image store or a registry failed.
    #[error(transparent)]
    Image(#[from] skiff_image::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a step description to low-level errors.
pub trait Context<T> {
    fn step<S: Display>(self, step: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn step<S: Display>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|errno| Error::Sys {
            step: step().to_string(),
            errno,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn step<S: Display>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|err| Error::Io {
            step: step().to_string(),
            err,
        })
    }
}
