//! API machinery that every client of the control plane shares, without the API server:
//! resource quantities, URL query decoding, and TLS serving with client-certificate
//! identity (who a request is from). The kubelet uses these; so does skiff-control.

pub mod failover;
pub mod quantity;
pub mod query;
pub mod tls;
pub mod trace;
