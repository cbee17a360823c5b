//! skiff-runtime: an OCI container runtime (runc-compatible) built on Linux namespaces,
//! cgroups (v2 and v1), seccomp and capabilities.
//!
//! [`Runtime`] is the library entry point used by the CLI and by Skiff's CRI server.

pub mod cgroups;
mod channel;
pub mod config_json;
pub mod console;
pub mod container;
pub mod cri;
pub mod devices;
pub mod error;
pub mod exeseal;
pub mod features;
pub mod hooks;
mod init;
pub mod log;
pub mod mempolicy;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod sandbox;
pub mod seccomp;
pub mod state;
mod syscalls;

pub use container::{CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
/// OCI images (the `skiff-image` crate), re-exported where the runtime's users look.
pub use skiff_image as image;
pub use state::{ContainerState, Status};
