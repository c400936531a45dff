//! A self-signed TLS certificate made at start (rcgen), and the rustls configs around it.
//!
//! Used by the SMTP receiver's STARTTLS. A client that wants to verify the server can trust
//! [`TestCert::certificate_der`]; one that only needs encryption (as MTAs do in opportunistic
//! TLS) can skip verification. Keys are fresh ECDSA P-256 keys, never written to disk.
//!
//! ```no_run
//! let cert = hedwig_testkit::tls::TestCert::new(&["mx1.example.test"]);
//! let server_config = cert.server_config();
//! let roots = cert.root_store(); // for a verifying client
//! # let _ = (server_config, roots);
//! ```

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};

/// A self-signed certificate and its private key.
#[derive(Clone)]
pub struct TestCert {
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
}

impl TestCert {
    /// Makes a certificate for `names` (DNS names or IP addresses), plus `localhost`.
    ///
    /// # Panics
    /// If rcgen cannot make the certificate (it does not for valid names).
    pub fn new(names: &[&str]) -> Self {
        let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        sans.push("localhost".to_string());
        let certified =
            rcgen::generate_simple_self_signed(sans).expect("rcgen makes a self-signed cert");
        Self {
            cert: certified.cert.der().clone(),
            key: Arc::new(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der())),
        }
    }

    /// The certificate, DER encoded.
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// A root store holding only this certificate, for a client that verifies the server.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // A certificate rcgen just made always parses.
        let _ = roots.add(self.cert.clone());
        roots
    }

    /// A rustls server config (aws-lc-rs provider, TLS 1.2 and 1.3) presenting this certificate.
    ///
    /// # Panics
    /// If rustls rejects the key (it does not for an rcgen P-256 key).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.as_ref().clone_key()),
            )
            .expect("rustls accepts the rcgen key");
        Arc::new(config)
    }
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert").finish_non_exhaustive()
    }
}
