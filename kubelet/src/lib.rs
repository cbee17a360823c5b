//! Skiff's kubelet: the node agent of the seed. It registers its Node, renews its Lease
//! (the heartbeat the node-lifecycle controller watches), and makes the pods bound to it
//! run through the CRI: sandboxes, image pulls, init and app containers, volumes,
//! probes, restarts per restartPolicy with back-off, status reports, events, and the
//! graceful-deletion handshake; its HTTPS API serves logs, exec, attach and
//! port-forward. Everything it acts on is re-read from the API server and the runtime,
//! so a restarted kubelet (even after kill -9) picks up where it left off.

pub mod backoff;
pub mod bootstrap;
pub mod config;
pub mod cri;
pub mod events;
pub mod labels;
pub mod lease;
pub mod node;
pub mod pods;
pub mod server;

pub use config::Config;
