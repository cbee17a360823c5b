//! The image store's errors: each names the step or the object it failed on.

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
    /// A reference, manifest, config or archive that is not valid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An image, blob or manifest that is not there (in the store or the registry).
    #[error("{0} not found")]
    NotFound(String),
    /// The registry could not be reached or refused.
    #[error("{0}")]
    Registry(String),
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
