//! The API server's TLS: the shared serving and client-certificate machinery
//! ([`skiff_apimachinery::tls`]) with the cluster's PKI.

use crate::pki::Pki;
pub use skiff_apimachinery::tls::*;
use std::sync::Arc;

/// The rustls server configuration for the API server's serving certificate. The chain
/// sent ends with the CA, so a joining node can find it and check it against the pin
/// it was given (`--ca-cert-hash`) before trusting anything else.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = format!("{}\n{}", pki.server_cert.trim_end(), pki.ca_cert);
    server_config_from(&pki.ca_cert, &chain, &pki.server_key)
}
