//! TLS for the intake (issue 11, F7) and the bounce listener's STARTTLS: rustls with the
//! certificate and key from PEM files, reloaded without a restart when either file changes
//! (checked every [`RELOAD_CHECK`]) or on SIGHUP. A reload that fails (a half-written file, a key that does
//! not match) is logged and the certificate in use is kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the files' modification times are checked.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// `tls:` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks the certificate and key.
pub fn load(settings: &TlsSettings) -> Result<CertifiedKey, String> {
    let (certs, key) = hedwig_service::tls::read_pem(&settings.cert_file, &settings.key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", settings.key_file.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(certified)
}

/// The certificate in use, swapped by [`Reloader::reload`].
#[derive(Debug)]
pub struct Reloader {
    settings: TlsSettings,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl ResolvesServerCert for Reloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        Some((
            modified(&self.settings.cert_file)?,
            modified(&self.settings.key_file)?,
        ))
    }

    /// Loads the files again; on success the next handshake uses them. A failure is not
    /// retried until a file changes again (or SIGHUP).
    pub fn reload(&self) -> Result<(), String> {
        *self.stamp.write().unwrap_or_else(|p| p.into_inner()) = self.stamp();
        let certified = load(&self.settings)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// Whether either file changed since the last load.
    fn changed(&self) -> bool {
        let now = self.stamp();
        now.is_some() && now != *self.stamp.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The acceptor for `settings`, and its reloader.
pub fn acceptor(settings: &TlsSettings) -> Result<(TlsAcceptor, Arc<Reloader>), String> {
    let (config, reloader) = server_config(settings, &[b"http/1.1"])?;
    Ok((TlsAcceptor::from(config), reloader))
}

/// The rustls configuration for `settings` offering the ALPN protocols `alpn` (none for
/// SMTP's STARTTLS, as the bounce listener uses it), and its reloader.
pub fn server_config(
    settings: &TlsSettings,
    alpn: &[&[u8]],
) -> Result<(Arc<rustls::ServerConfig>, Arc<Reloader>), String> {
    let certified = load(settings)?;
    let reloader = Arc::new(Reloader {
        settings: settings.clone(),
        current: RwLock::new(Arc::new(certified)),
        stamp: RwLock::new(None),
    });
    *reloader.stamp.write().unwrap_or_else(|p| p.into_inner()) = reloader.stamp();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(reloader.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), reloader))
}

/// Reloads on SIGHUP and when a file changes, until `shutdown`.
pub async fn watch(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            () = signalled => "SIGHUP",
            () = tokio::time::sleep(RELOAD_CHECK) => {
                if !reloader.changed() {
                    continue;
                }
                "file changed"
            }
        };
        match reloader.reload() {
            Ok(()) => tracing::info!(
                cert_file = %reloader.settings.cert_file.display(), reason = why,
                "TLS certificate reloaded"
            ),
            Err(e) => tracing::error!(
                error = %e, reason = why,
                "TLS certificate not reloaded; the one in use is kept"
            ),
        }
    }
}
