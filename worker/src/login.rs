//! Smarthost logins: the credentials of the relayhost and of per-domain transports, checked
//! and loaded once at start, and the "say it once per interval" memory of their failures.
//!
//! A [`Login`] is built from a [`RelayAuth`] config entry by [`Login::load`], which reads the
//! password file (so `check-config` finds a missing or unreadable one). The password is never
//! printed: `Debug` leaves it out.
//!
//! Not here: the AUTH exchange ([`crate::smtp::auth`]), the connection ([`crate::deliver`]).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::smtp::auth::Mechanism;

/// Largest password file read (bounded memory; a password is one short line).
const MAX_PASSWORD_FILE: u64 = 4096;

/// How often a failing login is logged at most (the metric counts every failure).
pub const LOG_INTERVAL: Duration = Duration::from_secs(300);

/// How TLS starts on a connection that logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginTls {
    /// Plain connect, then STARTTLS (required) before AUTH: port 587 (RFC 6409).
    Starttls,
    /// TLS from the first byte: port 465 (RFC 8314 §3.3).
    Wrapper,
}

/// The `relay_auth` / `transport_auth.<domain>` config entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAuth {
    pub user: String,
    /// A file holding the password (one line; a final newline is not part of it).
    pub password_file: PathBuf,
    /// `starttls` or `wrapper`; default: `wrapper` on port 465, else `starttls`.
    #[serde(default)]
    pub tls: Option<LoginTls>,
    /// `plain` or `login`; default: PLAIN when offered, else LOGIN.
    #[serde(default)]
    pub mechanism: Option<Mechanism>,
    /// Log in over TLS whose certificate was not verified (a relay on a private network with
    /// a certificate nobody issued). Logged as a warning at start. Never: AUTH without TLS.
    #[serde(default)]
    pub allow_unverified: bool,
}

/// Checked credentials of one transport.
pub struct Login {
    /// The config entry, for reasons and logs: `relayhost` or `transports.<domain>`.
    pub transport: String,
    pub user: String,
    password: String,
    pub tls: LoginTls,
    pub mechanism: Option<Mechanism>,
    pub allow_unverified: bool,
    /// When a failure was last logged.
    logged: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("transport", &self.transport)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("mechanism", &self.mechanism)
            .field("allow_unverified", &self.allow_unverified)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Checks `auth` (the entry `key`, for the transport `transport` on `port`) and reads its
    /// password file. `require_safe` refuses a password file readable by group or others
    /// (else a warning is printed by the caller's check).
    pub fn load(
        key: &str,
        transport: String,
        auth: &RelayAuth,
        port: u16,
        require_safe: bool,
    ) -> Result<Login, String> {
        if let Err(e) =
            hedwig_core::keyfile::check("password file", &auth.password_file, require_safe)
        {
            return Err(format!("{key}.password_file: {e}"));
        }
        let cannot = |why: &str| {
            format!(
                "{key}.password_file: cannot read {}: {why}",
                auth.password_file.display()
            )
        };
        match std::fs::metadata(&auth.password_file) {
            Ok(meta) if meta.len() > MAX_PASSWORD_FILE => {
                return Err(cannot(&format!(
                    "larger than {MAX_PASSWORD_FILE} bytes (one line expected)"
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(cannot(&e.to_string())),
        }
        let raw = std::fs::read_to_string(&auth.password_file).map_err(|e| {
            format!(
                "{key}.password_file: cannot read {}: {e}",
                auth.password_file.display()
            )
        })?;
        let password = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(&raw)
            .to_string();
        crate::smtp::auth::check_credentials(&auth.user, &password)
            .map_err(|e| format!("{key}: {e}"))?;
        Ok(Login {
            transport,
            user: auth.user.clone(),
            password,
            tls: auth.tls.unwrap_or(if port == 465 {
                LoginTls::Wrapper
            } else {
                LoginTls::Starttls
            }),
            mechanism: auth.mechanism,
            allow_unverified: auth.allow_unverified,
            logged: Mutex::new(None),
        })
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether a failure at `now` should be logged: the first one, then one per
    /// [`LOG_INTERVAL`].
    pub fn should_log(&self, now: Instant) -> bool {
        let mut last = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if now.saturating_duration_since(at) < LOG_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(path: PathBuf) -> RelayAuth {
        RelayAuth {
            user: "hedwig".into(),
            password_file: path,
            tls: None,
            mechanism: None,
            allow_unverified: false,
        }
    }

    #[test]
    fn password_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let login = Login::load(
            "relay_auth",
            "relayhost".into(),
            &auth(path.clone()),
            465,
            false,
        )
        .unwrap();
        assert_eq!(login.password(), "s3cret");
        assert_eq!(login.tls, LoginTls::Wrapper);
        assert!(!format!("{login:?}").contains("s3cret"));
        let login = Login::load(
            "relay_auth",
            "relayhost".into(),
            &auth(path.clone()),
            587,
            false,
        )
        .unwrap();
        assert_eq!(login.tls, LoginTls::Starttls);

        std::fs::write(dir.path().join("big"), vec![b'x'; 5000]).unwrap();
        let e =
            Login::load("k", "r".into(), &auth(dir.path().join("big")), 587, false).unwrap_err();
        assert!(e.contains("larger than 4096"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        let e = Login::load("relay_auth", "r".into(), &auth(path), 587, false).unwrap_err();
        assert!(e.contains("relay_auth") && e.contains("empty"), "{e}");
        let e = Login::load(
            "transport_auth.x",
            "r".into(),
            &auth(dir.path().join("no")),
            587,
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("transport_auth.x.password_file"), "{e}");
    }

    #[test]
    fn failures_logged_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "pw").unwrap();
        let login = Login::load("k", "relayhost".into(), &auth(path), 587, false).unwrap();
        let t0 = Instant::now();
        assert!(login.should_log(t0));
        assert!(!login.should_log(t0 + Duration::from_secs(1)));
        assert!(!login.should_log(t0 + LOG_INTERVAL - Duration::from_secs(1)));
        assert!(login.should_log(t0 + LOG_INTERVAL));
    }
}
