//! skiff-vm: QEMU test clusters. Builds an initramfs around the host's Debian kernel,
//! boots N VMs on a private loopback-UDP L2 segment, and runs commands in them through
//! a virtio-serial agent. Used by the `skiff-vm` CLI and by the VM tests in `tests/`.

pub mod agent;
pub mod cluster;
pub mod cpio;
pub mod hub;
pub mod image;
pub mod kubernetes;
pub mod qemu;

pub use agent::Response;
pub use cluster::{Cluster, UpOptions};
