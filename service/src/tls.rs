//! The server certificate and key of the daemons that serve TLS (mailman's STARTTLS, the post
//! office's HTTPS), read from PEM files the one way both need.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM certificate chain (leaf first; at least one certificate) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). The error names the file. Whether the two match is the caller's
/// check (rustls builds it in different places for the two daemons).
pub fn read_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((certs, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let err = read_pem(&empty, &missing).unwrap_err();
        assert!(err.contains("empty.pem: no certificate found"), "{err}");
        let err = read_pem(&missing, &empty).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
