//! STARTTLS: the rustls server configuration from PEM files.

use std::path::Path;
use std::sync::Arc;

/// Loads a certificate chain and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let (certs, key) = hedwig_service::tls::read_pem(cert, key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Arc::new(config))
}
