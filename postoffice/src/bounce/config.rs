//! `bounce_listener:` in the post office config: where the listener runs, which bounce
//! domains it answers for, the VERP secret (the same one the workers' `verp:` uses) and the
//! bounds of a session, and the optional STARTTLS certificate. Checked once into
//! [`BounceSettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hedwig_core::config::{read_secret, ByteSize};
use hedwig_core::verp::VerpKey;
use mailman::smtp::{RecipientCheck, SessionConfig};
use serde::{Deserialize, Serialize};

/// The `bounce_listener:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceListenerConfig {
    /// `ip:port` to listen on (the MX of the bounce domains points here; port 25 in
    /// production). Required.
    pub listen: Option<SocketAddr>,
    /// This listener's host name (greeting and EHLO); default: the first of `domains`.
    pub hostname: Option<String>,
    /// The bounce domains (`bounces.example.com`) the workers' `verp:` names. Mail to any
    /// other domain is refused.
    pub domains: Vec<String>,
    /// The VERP secret (the workers' `verp.secret`), or a file holding it (wins).
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Largest report taken, in octets; reports are small.
    pub max_message_size: ByteSize,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Sessions at once, and from one client address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// A command line must arrive whole within this.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// One read in DATA may wait this long.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// A whole session ends after this.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// In DATA, after `data_timeout`, a report must arrive at this many octets per second on
    /// average, or the client gets `421 4.4.2` (mailman's `min_data_rate`, Postfix's
    /// `smtpd_min_data_rate`); 0 disables.
    pub min_data_rate: u64,
    /// STARTTLS: the certificate chain and key (PEM; reloaded when the files change or on
    /// SIGHUP, as the intake's `tls:`). STARTTLS is offered in EHLO only when this is set.
    pub tls: Option<crate::tls::TlsSettings>,
}

impl Default for BounceListenerConfig {
    fn default() -> Self {
        BounceListenerConfig {
            listen: None,
            hostname: None,
            domains: Vec::new(),
            secret: None,
            secret_file: None,
            max_message_size: ByteSize(2 * 1024 * 1024),
            max_recipients: 50,
            max_connections: 100,
            max_connections_per_client: 10,
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(600),
            min_data_rate: 500,
            tls: None,
        }
    }
}

/// The checked listener settings.
#[derive(Debug, Clone)]
pub struct BounceSettings {
    pub listen: SocketAddr,
    pub hostname: String,
    /// Lowercase bounce domains.
    pub domains: Arc<Vec<String>>,
    pub key: VerpKey,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub min_data_rate: u64,
    /// The STARTTLS certificate, when STARTTLS is offered.
    pub tls: Option<crate::tls::TlsSettings>,
    /// mailman's session settings, with the token check.
    pub session: SessionConfig,
}

/// Bad commands (refused tokens count) after which a session is closed.
const MAX_ERRORS: usize = 10;

impl BounceListenerConfig {
    /// Checks the section (`require_safe_keys` from the post office's top level); every
    /// problem, each naming its key.
    pub fn check(&self, require_safe_keys: bool) -> Result<BounceSettings, Vec<String>> {
        let mut problems = Vec::new();
        let listen = self.listen;
        if listen.is_none() {
            problems.push("bounce_listener.listen: required (ip:port)".to_string());
        }
        let mut domains = Vec::new();
        for d in &self.domains {
            match hedwig_core::key::normalize_fqdn(d) {
                Ok(d) => domains.push(d),
                Err(e) => problems.push(format!("bounce_listener.domains: {e}")),
            }
        }
        if self.domains.is_empty() {
            problems.push("bounce_listener.domains: at least one bounce domain is needed".into());
        }
        if let Some(path) = &self.secret_file {
            if let Err(e) = hedwig_core::keyfile::check("secret file", path, require_safe_keys) {
                problems.push(format!("bounce_listener.secret_file: {e}"));
            }
        }
        let key = match read_secret(self.secret.as_deref(), self.secret_file.as_deref()) {
            Ok(Some(s)) => match hedwig_core::key::check_secret(&s) {
                Ok(s) => Some(VerpKey::new(s)),
                Err(e) => {
                    problems.push(format!("bounce_listener.secret: {e}"));
                    None
                }
            },
            Ok(None) => {
                problems.push(
                    "bounce_listener.secret: not set (secret_file or secret; the same as the workers' verp.secret)"
                        .into(),
                );
                None
            }
            Err(e) => {
                problems.push(format!("bounce_listener.secret_file: {e}"));
                None
            }
        };
        let hostname = match &self.hostname {
            Some(h) => match hedwig_core::key::normalize_fqdn(h) {
                Ok(h) => h,
                Err(e) => {
                    problems.push(format!("bounce_listener.hostname: {e}"));
                    String::new()
                }
            },
            None => domains.first().cloned().unwrap_or_default(),
        };
        if self.max_message_size.0 == 0
            || self.max_recipients == 0
            || self.max_connections == 0
            || self.max_connections_per_client == 0
        {
            problems.push(
                "bounce_listener: max_message_size, max_recipients, max_connections and \
                 max_connections_per_client must be more than 0"
                    .into(),
            );
        }
        if self.command_timeout.is_zero()
            || self.data_timeout.is_zero()
            || self.session_timeout.is_zero()
        {
            problems.push(
                "bounce_listener: command_timeout, data_timeout and session_timeout must be more than 0"
                    .into(),
            );
        }
        let (Some(listen), Some(key), true) = (listen, key, problems.is_empty()) else {
            return Err(problems);
        };
        let domains = Arc::new(domains);
        let check = {
            let (key, domains) = (key.clone(), domains.clone());
            RecipientCheck(Arc::new(move |address: &str| {
                match key.verify_address(address, &domains) {
                    Some(_) => Ok(()),
                    None => Err((550, "5.1.1 no such bounce address here".into())),
                }
            }))
        };
        Ok(BounceSettings {
            listen,
            session: SessionConfig {
                hostname: hostname.clone(),
                max_message_size: self.max_message_size.as_usize(),
                max_recipients: self.max_recipients,
                starttls: self.tls.is_some(),
                max_errors: MAX_ERRORS,
                bare_newline: Default::default(),
                recipient_check: Some(check),
            },
            hostname,
            domains,
            key,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            command_timeout: self.command_timeout,
            data_timeout: self.data_timeout,
            session_timeout: self.session_timeout,
            min_data_rate: self.min_data_rate,
            tls: self.tls.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a bounce listener secret, long enough";

    fn yaml(text: &str) -> crate::Config {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        hedwig_core::config::load_from_env(Some(f.path()), std::iter::empty::<(&str, &str)>())
            .unwrap()
    }

    #[test]
    fn a_whole_section_from_yaml() {
        let c = yaml(&format!(
            "secret: {SECRET}\nbounce_listener:\n  listen: 127.0.170.44:2525\n  domains: [Bounces.Example.COM]\n  secret: {SECRET}\n  max_message_size: 1MB\n  command_timeout: 5s\n  min_data_rate: 100\n  tls:\n    cert_file: /etc/hedwig/b.crt\n    key_file: /etc/hedwig/b.key\n"
        ));
        let s = c.check().unwrap().bounce.unwrap();
        assert_eq!(s.listen.to_string(), "127.0.170.44:2525");
        assert_eq!(*s.domains, ["bounces.example.com"]);
        assert_eq!(s.hostname, "bounces.example.com");
        assert_eq!(s.session.max_message_size, 1_000_000);
        assert_eq!(s.command_timeout, Duration::from_secs(5));
        assert_eq!(s.min_data_rate, 100);
        assert_eq!(
            s.tls.as_ref().map(|t| t.cert_file.display().to_string()),
            Some("/etc/hedwig/b.crt".into())
        );
        assert!(s.session.starttls, "offered with tls:");
        let token = s
            .key
            .return_path(
                "018F2A3B4C5D0123456789AB",
                "a@b.test",
                "bounces.example.com",
            )
            .unwrap();
        let check = s.session.recipient_check.as_ref().unwrap();
        assert_eq!((check.0)(&token), Ok(()));
        assert!(matches!(
            (check.0)("bounces+aaaa@bounces.example.com"),
            Err((550, _))
        ));
        // Off by default.
        assert!(yaml(&format!("secret: {SECRET}\n"))
            .check()
            .unwrap()
            .bounce
            .is_none());
    }

    #[test]
    fn every_problem_is_named() {
        let c = yaml(&format!(
            "secret: {SECRET}\nevents: false\nbounce_listener:\n  domains: [\"not a domain\"]\n  secret: short\n  max_connections: 0\n"
        ));
        let problems = c.check().unwrap_err();
        for needle in [
            "bounce_listener: needs events: true",
            "bounce_listener.listen: required",
            "bounce_listener.domains:",
            "bounce_listener.secret:",
            "max_connections",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
        // An unknown key fails at load, naming it.
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "bounce_listener:\n  nope: 1\n").unwrap();
        let err = hedwig_core::config::load_from_env::<crate::Config, _, &str, &str>(
            Some(f.path()),
            std::iter::empty(),
        )
        .unwrap_err();
        assert!(format!("{err}").contains("nope"), "{err}");
    }
}
