//! The CRI as its clients see it, apart from any runtime: the `runtime.v1` messages and
//! services ([`v1`]), a client over the runtime's unix socket ([`client`]), and the
//! container log format runtimes write and kubelets read ([`logs`]). The kubelet and
//! `skiffctl` need only this; the runtime's CRI server implements it.

pub mod client;
pub mod logs;

pub use k8s_cri::v1;
