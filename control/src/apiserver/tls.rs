//! The API server's TLS: the shared serving and client-certificate machinery
//! ([`skiff_apimachinery::tls`]) with the cluster's PKI.

use crate::pki::Pki;
pub use skiff_apimachinery::tls::*;
use std::sync::Arc;

/// The rustls server configuration for the API server's serving certificate.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_from(&pki.ca_cert, &pki.server_cert, &pki.server_key)
}
