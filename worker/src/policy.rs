//! The delivery policy sections of the worker's config: the SMTP timeouts per phase, the
//! STARTTLS policy per recipient domain, and the caps per destination.
//!
//! Plain data types, imported by the layers that apply them (the SMTP session reads
//! [`Timeouts`], [`crate::destination`] keeps [`Limits`], [`crate::deliver`] asks [`Tls`] for
//! a domain's [`TlsMode`]) and re-exported by [`crate::config`], which holds them in its
//! [`Config`](crate::config::Config) and checks them. Apart from config so that the session
//! and the destination pool do not import the config (which imports the routing table).
//!
//! Not here: checking the keys (`Config::check`), applying the caps ([`crate::destination`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// RFC 5321 §4.5.3.2 timeouts, one per phase (defaults are the RFC's minimums).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// §4.5.3.2.1: initial 220 message.
    #[serde(with = "humantime_serde")]
    pub greeting: Duration,
    /// EHLO, STARTTLS, RSET, QUIT (not in the RFC; Postfix uses 300 s).
    #[serde(with = "humantime_serde")]
    pub helo: Duration,
    /// §4.5.3.2.2.
    #[serde(with = "humantime_serde")]
    pub mail: Duration,
    /// §4.5.3.2.3.
    #[serde(with = "humantime_serde")]
    pub rcpt: Duration,
    /// §4.5.3.2.4: the 354 after DATA.
    #[serde(with = "humantime_serde")]
    pub data_init: Duration,
    /// §4.5.3.2.5: each write of the message.
    #[serde(with = "humantime_serde")]
    pub data_block: Duration,
    /// §4.5.3.2.6: the reply to the final dot.
    #[serde(with = "humantime_serde")]
    pub data_done: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: m(5),
            helo: m(5),
            mail: m(5),
            rcpt: m(5),
            data_init: m(2),
            data_block: m(3),
            data_done: m(10),
        }
    }
}

/// STARTTLS policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Use STARTTLS when offered, without verifying the certificate (what MTAs do).
    #[default]
    Opportunistic,
    /// Never use TLS.
    None,
    /// Require STARTTLS and a certificate valid for the MX host name; defer otherwise.
    Required,
}

/// TLS settings: a default mode and per-domain overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub default: TlsMode,
    /// Per recipient domain (lowercase, A-labels).
    pub domains: BTreeMap<String, TlsMode>,
    /// Extra trust anchors (PEM) for `required`, added to the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
}

impl Tls {
    /// The mode for a recipient domain.
    pub fn mode(&self, domain: &str) -> TlsMode {
        self.domains.get(domain).copied().unwrap_or(self.default)
    }
}

/// The caps of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limit {
    /// Concurrent connections (0: no cap).
    pub connections: usize,
    /// Messages sent over one connection before it is closed (1: no reuse).
    pub messages_per_connection: usize,
    /// Messages per minute (0: no cap).
    pub messages_per_minute: u32,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            connections: 20,
            messages_per_connection: 100,
            messages_per_minute: 0,
        }
    }
}

/// The `limits` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// For every destination without its own entry.
    pub default: Limit,
    /// Per MX host name or recipient domain (lowercase, A-labels).
    pub destinations: BTreeMap<String, Limit>,
    /// How long a destination that said "slow down" (421, 4.7.x too many) is left alone.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// How long an idle connection is kept for reuse.
    #[serde(with = "humantime_serde")]
    pub idle_time: Duration,
    /// How long a delivery waits for a free connection slot before it is deferred.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default: Limit::default(),
            destinations: BTreeMap::new(),
            cooldown: Duration::from_secs(60),
            idle_time: Duration::from_secs(5),
            wait: Duration::from_secs(10),
        }
    }
}
