//! The worker's configuration: one serde struct, loaded once by [`load`] and passed down.
//!
//! Every key has a default (so an empty file is valid) and an environment override
//! `HEDWIG_<KEY>` (nested keys joined with `__`). [`Config::check`] finds what the types cannot
//! (unparsable nexthops, an empty hostname, a domain key that is not a domain) and turns the
//! config into [`Settings`]: nameservers and routes parsed once, domain keys in the lowercase
//! A-label form recipient domains have. [`crate::check`] adds the checks that need I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::login::Login;
pub use crate::login::{LoginTls, RelayAuth};
pub use crate::policy::{Limit, Limits, Timeouts, Tls, TlsMode};
pub use crate::pools::PoolConfig;
use crate::pools::Pools;
use crate::route::{Nexthop, Route, Routes};

/// Everything the worker reads from its config file and environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// beanstalkd `host:port`, or a list: the delivery tasks are spread over the servers.
    #[serde(deserialize_with = "hedwig_core::config::comma_list")]
    pub beanstalkd: Vec<String>,
    /// Prefix of the tube names: reserves from `<prefix>`, records failures in
    /// `<prefix>-failed`, moves held hosts' mail to `<prefix>-held`, reads the hold list in
    /// `<prefix>-holds`. The post office must have the same.
    pub tube_prefix: String,
    /// How many deliveries run at once in this process (each with its own beanstalkd
    /// connection).
    pub concurrency: usize,
    /// The name sent in EHLO. Must match the PTR of the sending IP address.
    pub hostname: String,
    /// DNS servers as `ip:port` (or `ip`, port 53). Empty: the system's resolv.conf.
    pub nameservers: Vec<String>,
    /// The port of remote MX hosts.
    pub smtp_port: u16,
    /// Try IPv6 addresses of an MX (before its IPv4 addresses).
    pub ipv6: bool,
    pub timeouts: Timeouts,
    /// The retry schedule and lifetime of a lane that does not set its own.
    pub retry: Retry,
    /// The lanes (docs/lanes.md), as the post office has them: each lane's `retry` keys
    /// (over `retry`) and the priority of its retries (`priority + spread`).
    pub lanes: BTreeMap<String, hedwig_queue::lane::Lane>,
    /// The lane of jobs without one (queued by post offices before lanes) and of jobs in a
    /// lane this worker does not know.
    pub default_lane: String,
    /// Send RFC 3464 bounces to the envelope sender on permanent failure.
    pub bounces: bool,
    /// How large bounces may be and how many one sender gets.
    pub bounce_limits: BounceLimits,
    pub return_path: ReturnPath,
    /// VERP return paths per sender domain (late bounces and complaints, docs/bounces.md).
    pub verp: crate::verp::VerpConfig,
    /// One-click unsubscribe links (RFC 8058) in bulk hosts' mail (docs/unsubscribe.md).
    pub unsubscribe: crate::unsubscribe::UnsubscribeConfig,
    /// Send all mail through this host: `host`, `host:port` (MX lookup of host) or
    /// `[host]:port` (no MX lookup).
    pub relayhost: Option<String>,
    /// Per recipient domain: a nexthop like `relayhost`, or `capture` (write to the Maildir).
    pub transports: BTreeMap<String, String>,
    /// The relayhost's login (SMTP AUTH over verified TLS): `{user, password_file, tls,
    /// mechanism, allow_unverified}`.
    pub relay_auth: Option<RelayAuth>,
    /// Per recipient domain of `transports`: that transport's login, like `relay_auth`.
    pub transport_auth: BTreeMap<String, RelayAuth>,
    pub tls: Tls,
    /// MTA-STS (RFC 8461) policies of recipient domains: `{enabled, state_dir,
    /// fetch_timeout, retry_fetch_after}` (docs/operator-guide.md, "MTA-STS").
    pub mta_sts: crate::mta_sts::MtaStsConfig,
    /// TLS-RPT (RFC 8460) daily reports of the MTA-STS checks: `{enabled, organization_name,
    /// sender, contact_info, interval, max_delay, flush_interval, http_timeout}`
    /// (docs/operator-guide.md, "TLS-RPT"). Off by default.
    pub tls_rpt: crate::tls_rpt::TlsRptConfig,
    /// Write every message into this Maildir instead of delivering it.
    pub capture_maildir: Option<PathBuf>,
    /// `ip:port` of the /health and /metrics endpoint; empty disables it.
    pub http_listen: String,
    /// Sending hosts (fqdns) whose messages are counted under their own `host` label in
    /// `/metrics`; every other host counts as `other` (a label value is a time series: the
    /// operator bounds them, not the jobs).
    pub metrics_hosts: Vec<String>,
    /// Time-to-run of the jobs this worker puts (retries, failed records, bounces).
    #[serde(with = "humantime_serde")]
    pub job_ttr: Duration,
    /// How long a stopping worker lets in-flight deliveries finish before handing them back.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Largest message the worker will try (larger ones fail permanently); 0 = no limit.
    pub max_message_size: hedwig_core::config::ByteSize,
    /// DKIM keys (see `hedwig_message::dkim::DkimConfig`).
    pub dkim: hedwig_message::dkim::DkimConfig,
    /// Refuse to start when a DKIM key file is readable by group or others (else: a warning).
    pub require_safe_keys: bool,
    /// Per-destination caps, slow-down and connection reuse.
    pub limits: Limits,
    /// Address literals (`x@[192.0.2.1]`) the worker may deliver to: only in these networks
    /// (`allow: [cidr, ...]`); others fail permanently without a connection. Default: none.
    pub address_literals: hedwig_core::address::AddressLiterals,
    /// A message with more `Received:` header fields than this is looping: it is not
    /// delivered, every recipient fails with `5.4.6` (Postfix's `hopcount_limit`).
    pub hop_limit: usize,
    /// Put delivery ledger events (each recipient's outcome of each attempt, bounces queued,
    /// jobs set aside for held hosts) into the events tube (`<tube_prefix>-events`) of the
    /// server the job came from, before the job is deleted. `false`: none.
    pub events: bool,
    /// IP pools (docs/operator-guide.md, "IP pools"): per pool name, the local `addresses`
    /// to send from (round-robin, same family as the target) and the `ehlo` name to use
    /// from them. Empty: connections are not bound, EHLO is `hostname`.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Sending host (fqdn) → pool name.
    pub pool_hosts: BTreeMap<String, String>,
    /// Envelope sender domain → pool name (wins over `pool_hosts`).
    pub pool_sender_domains: BTreeMap<String, String>,
    /// The pool of mail no entry maps; unset: such mail goes out as without pools.
    pub default_pool: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            beanstalkd: vec!["127.0.0.1:11300".into()],
            tube_prefix: hedwig_queue::tubes::DEFAULT_PREFIX.into(),
            concurrency: 32,
            hostname: String::new(),
            nameservers: Vec::new(),
            smtp_port: 25,
            ipv6: true,
            timeouts: Timeouts::default(),
            retry: Retry::default(),
            lanes: hedwig_queue::lane::default_lanes(),
            default_lane: hedwig_queue::lane::default_lane(),
            bounces: true,
            bounce_limits: BounceLimits::default(),
            return_path: ReturnPath::default(),
            verp: Default::default(),
            unsubscribe: Default::default(),
            relayhost: None,
            transports: BTreeMap::new(),
            relay_auth: None,
            transport_auth: BTreeMap::new(),
            tls: Tls::default(),
            mta_sts: Default::default(),
            tls_rpt: Default::default(),
            capture_maildir: None,
            http_listen: "127.0.0.1:8026".into(),
            metrics_hosts: Vec::new(),
            job_ttr: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            max_message_size: hedwig_core::config::ByteSize(0),
            dkim: hedwig_message::dkim::DkimConfig::default(),
            require_safe_keys: false,
            limits: Limits::default(),
            address_literals: Default::default(),
            hop_limit: 50,
            events: true,
            pools: BTreeMap::new(),
            pool_hosts: BTreeMap::new(),
            pool_sender_domains: BTreeMap::new(),
            default_pool: None,
        }
    }
}

/// When temporary failures are retried, and when they give up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub first: Duration,
    /// Longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// How long after it was queued a message may still be retried; then it bounces.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            first: Duration::from_secs(300),
            max_delay: Duration::from_secs(4 * 3600),
            max_lifetime: Duration::from_secs(5 * 86400),
        }
    }
}

/// Bounds on bounces (backscatter): their size, and how many one envelope sender gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceLimits {
    /// At most this much of the original message is returned (its header section, cut on a
    /// line; never the body). Postfix's `bounce_size_limit`.
    pub returned_size: hedwig_core::config::ByteSize,
    /// At most this much of each recipient's diagnostic (the remote answer) is repeated.
    pub diagnostic_size: hedwig_core::config::ByteSize,
    /// At most this many failed recipients are detailed in one bounce; a line says how many
    /// more failed.
    pub recipients: usize,
    /// At most this many bounces to one envelope sender per `interval` (per worker process);
    /// over it no bounce is sent, the failure is still recorded. 0 = no limit.
    pub per_sender: u32,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for BounceLimits {
    fn default() -> Self {
        let dsn = hedwig_message::dsn::Limits::default();
        BounceLimits {
            returned_size: hedwig_core::config::ByteSize(dsn.returned_bytes as u64),
            diagnostic_size: hedwig_core::config::ByteSize(dsn.diagnostic_bytes as u64),
            recipients: dsn.recipients,
            per_sender: 100,
            interval: Duration::from_secs(3600),
        }
    }
}

impl BounceLimits {
    /// The limits the DSN builder applies.
    pub fn dsn(&self) -> hedwig_message::dsn::Limits {
        hedwig_message::dsn::Limits {
            returned_bytes: self.returned_size.as_usize(),
            diagnostic_bytes: self.diagnostic_size.as_usize(),
            recipients: self.recipients,
        }
    }
}

/// A fixed envelope sender (MAIL FROM) replacing the one the host gave.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReturnPath {
    /// For every host without its own entry.
    pub default: Option<String>,
    /// Per sending host fqdn (lowercase).
    pub hosts: BTreeMap<String, String>,
}

impl ReturnPath {
    /// The MAIL FROM to use for a message from `host` whose envelope sender is `mail_from`.
    /// The null sender is never replaced (bounces stay bounces).
    pub fn apply<'a>(&'a self, host: &str, mail_from: &'a str) -> &'a str {
        if mail_from.is_empty() {
            return mail_from;
        }
        self.hosts
            .get(&host.to_ascii_lowercase())
            .or(self.default.as_ref())
            .map(String::as_str)
            .unwrap_or(mail_from)
    }
}

impl Config {
    /// The tube names, from `tube_prefix`; the error names the key.
    pub fn tubes(&self) -> Result<hedwig_queue::Tubes, String> {
        hedwig_queue::Tubes::new(&self.tube_prefix).map_err(|e| format!("tube_prefix: {e}"))
    }

    /// Checks what the types cannot catch and parses, once, what delivery needs typed:
    /// nameservers, nexthops, domain keys (into the lowercase A-label form recipient domains
    /// have). Every problem is returned, one line each, naming its key.
    pub fn check(&self) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let mut config = self.clone();
        for key in &self.dkim.keys {
            if let Err(e) =
                hedwig_core::keyfile::check("DKIM key file", &key.key_file, self.require_safe_keys)
            {
                errors.push(format!("dkim: {e}"));
            }
        }
        if self.beanstalkd.is_empty() {
            errors.push("beanstalkd: at least one host:port is needed".into());
        }
        if let Err(e) = self.tubes() {
            errors.push(e);
        }
        for addr in &self.beanstalkd {
            if let Err(e) = hedwig_core::config::check_host_port(addr) {
                errors.push(format!("beanstalkd: {e}"));
            }
        }
        if self.concurrency == 0 {
            errors.push("concurrency: must be at least 1".into());
        }
        if self.concurrency < self.beanstalkd.len() {
            errors.push(format!(
                "concurrency: {} tasks cannot serve {} beanstalkd servers",
                self.concurrency,
                self.beanstalkd.len()
            ));
        }
        if self.hostname.trim().is_empty() && self.capture_maildir.is_none() {
            errors.push(
                "hostname: must be set to the name the sending IP's PTR points at (sent in EHLO)"
                    .into(),
            );
        }
        let mut nameservers = Vec::new();
        for ns in &self.nameservers {
            match hedwig_dns::parse_nameserver(ns) {
                Ok(addr) => nameservers.push(addr),
                Err(e) => errors.push(format!("nameservers: {e}")),
            }
        }
        let relayhost = match &self.relayhost {
            None => None,
            Some(relay) => Nexthop::parse(relay, self.smtp_port)
                .map_err(|e| errors.push(format!("relayhost: {e}")))
                .ok(),
        };
        let mut transports = BTreeMap::new();
        config.transports.clear();
        for (key, domain, value) in domain_keys("transports", &self.transports, &mut errors) {
            let route = if value == "capture" {
                if self.capture_maildir.is_none() {
                    errors.push(format!(
                        "transports.{key}: capture needs capture_maildir to be set"
                    ));
                }
                Route::Capture
            } else {
                match Nexthop::parse(value, self.smtp_port) {
                    Ok(hop) => Route::Smtp(hop),
                    Err(e) => {
                        errors.push(format!("transports.{key}: {e}"));
                        continue;
                    }
                }
            };
            transports.insert(domain.clone(), route);
            config.transports.insert(domain, value.clone());
        }
        let relay_login = match (&self.relay_auth, &relayhost, &self.relayhost) {
            (None, _, _) => None,
            (Some(auth), Some(hop), Some(text)) => Login::load(
                "relay_auth",
                format!("relayhost {text}"),
                auth,
                hop.port(),
                self.require_safe_keys,
            )
            .map_err(|e| errors.push(e))
            .ok()
            .map(Arc::new),
            (Some(_), None, None) => {
                errors.push("relay_auth: there is no relayhost to log in to".into());
                None
            }
            // relayhost did not parse: already reported.
            (Some(_), _, _) => None,
        };
        let mut logins = BTreeMap::new();
        config.transport_auth.clear();
        for (key, domain, auth) in domain_keys("transport_auth", &self.transport_auth, &mut errors)
        {
            let Some(Route::Smtp(hop)) = transports.get(&domain) else {
                errors.push(format!(
                    "transport_auth.{key}: transports has no SMTP nexthop for this domain"
                ));
                continue;
            };
            let text = config.transports.get(&domain).cloned().unwrap_or_default();
            match Login::load(
                &format!("transport_auth.{key}"),
                format!("transports.{domain} {text}"),
                auth,
                hop.port(),
                self.require_safe_keys,
            ) {
                Ok(login) => {
                    logins.insert(domain.clone(), Arc::new(login));
                }
                Err(e) => errors.push(e),
            }
            config.transport_auth.insert(domain, auth.clone());
        }
        config.tls.domains = domain_keys("tls.domains", &self.tls.domains, &mut errors)
            .into_iter()
            .map(|(_, domain, mode)| (domain, *mode))
            .collect();
        config.limits.destinations = domain_keys(
            "limits.destinations",
            &self.limits.destinations,
            &mut errors,
        )
        .into_iter()
        .map(|(_, domain, limit)| (domain, *limit))
        .collect();
        for (key, path) in self
            .return_path
            .default
            .iter()
            .map(|p| ("default".to_string(), p))
            .chain(
                self.return_path
                    .hosts
                    .iter()
                    .map(|(h, p)| (format!("hosts.{h}"), p)),
            )
        {
            if let Err(e) = hedwig_core::address::Mailbox::parse(path) {
                errors.push(format!("return_path.{key}: {e}"));
            }
        }
        // Sending hosts as the post office writes them into jobs (normalised fqdns).
        config.return_path.hosts.clear();
        for (host, path) in &self.return_path.hosts {
            match hedwig_core::key::normalize_fqdn(host) {
                Ok(fqdn) => {
                    if config
                        .return_path
                        .hosts
                        .insert(fqdn.clone(), path.clone())
                        .is_some()
                    {
                        errors.push(format!(
                            "return_path.hosts.{host}: another entry is for {fqdn} too"
                        ));
                    }
                }
                Err(e) => errors.push(format!("return_path.hosts.{host}: {e}")),
            }
        }
        if !self.http_listen.is_empty() && self.http_listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "http_listen: {:?} is not ip:port",
                self.http_listen
            ));
        }
        let b = &self.bounce_limits;
        if b.diagnostic_size.as_usize() < 64 {
            errors.push("bounce_limits.diagnostic_size: must be at least 64 bytes".into());
        }
        if b.recipients == 0 {
            errors.push("bounce_limits.recipients: must be at least 1".into());
        }
        if b.per_sender > 0 && b.interval.is_zero() {
            errors.push("bounce_limits.interval: must be more than 0s".into());
        }
        if self.hop_limit == 0 {
            errors.push(
                "hop_limit: must be at least 1 (every relayed message has a Received: field)"
                    .into(),
            );
        }
        if self.retry.first.is_zero() {
            errors.push("retry.first: must be more than 0s".into());
        }
        if self.mta_sts.enabled && self.mta_sts.fetch_timeout.is_zero() {
            errors.push("mta_sts.fetch_timeout: must be more than 0s".into());
        }
        let rpt = &self.tls_rpt;
        if rpt.enabled {
            if !self.mta_sts.enabled {
                errors.push(
                    "tls_rpt.enabled: needs mta_sts.enabled (the reports are of its checks)".into(),
                );
            }
            if rpt.interval < Duration::from_secs(1) {
                errors.push("tls_rpt.interval: must be at least 1s".into());
            }
            if rpt.flush_interval.is_zero() || rpt.http_timeout.is_zero() {
                errors.push("tls_rpt.flush_interval, http_timeout: must be more than 0s".into());
            }
            let sender = rpt.sender.trim();
            if !sender.is_empty() && hedwig_core::address::Mailbox::parse(sender).is_err() {
                errors.push(format!("tls_rpt.sender: {sender:?} is not an address"));
            }
        }
        errors.extend(hedwig_queue::lane::check(&self.lanes, &self.default_lane));
        let verp = self
            .verp
            .check(self.require_safe_keys)
            .map_err(|e| errors.extend(e))
            .ok()
            .flatten();
        let unsubscribe = self
            .unsubscribe
            .check(self.require_safe_keys)
            .map_err(|e| errors.extend(e))
            .ok()
            .flatten();
        let pools = crate::pools::check(&crate::pools::PoolSettings {
            pools: &self.pools,
            hosts: &self.pool_hosts,
            sender_domains: &self.pool_sender_domains,
            default: self.default_pool.as_deref(),
            ipv6: self.ipv6,
            literal_targets: relayhost
                .iter()
                .map(|hop| ("relayhost", hop))
                .chain(transports.iter().filter_map(|(domain, route)| match route {
                    Route::Smtp(hop) => Some((domain.as_str(), hop)),
                    Route::Capture => None,
                }))
                .filter_map(|(key, hop)| match hop {
                    Nexthop::Direct { host, .. } => host
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .map(|ip| (literal_key(key), ip)),
                    Nexthop::Mx { .. } => None,
                })
                .collect(),
        })
        .map_err(|e| errors.extend(e))
        .unwrap_or_default();
        if !errors.is_empty() {
            return Err(errors);
        }
        let routes = Routes {
            capture_all: self.capture_maildir.is_some(),
            transports,
            relayhost,
            port: self.smtp_port,
            relay_login,
            logins,
        };
        Ok(Settings {
            config,
            nameservers,
            routes,
            verp,
            unsubscribe,
            pools,
        })
    }

    /// The EHLO name (the configured hostname, or `localhost` in capture-only setups).
    pub fn ehlo_name(&self) -> &str {
        match self.hostname.trim() {
            "" => "localhost",
            name => name,
        }
    }
}

/// A checked configuration, ready to run: the [`Config`] with its domain keys normalised, and
/// what was parsed from it once so that nothing is re-parsed per delivery.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// `nameservers`, parsed.
    pub nameservers: Vec<SocketAddr>,
    /// `capture_maildir`, `transports` and `relayhost`, parsed.
    pub routes: Routes,
    /// `verp`, checked; `None` when off.
    pub verp: Option<crate::verp::Verp>,
    /// `unsubscribe`, checked; `None` when off.
    pub unsubscribe: Option<crate::unsubscribe::Unsubscriber>,
    /// `pools`, `pool_hosts`, `pool_sender_domains` and `default_pool`, checked.
    pub pools: Pools,
}

/// The config key of a nexthop: `relayhost`, or `transports.<domain>`.
fn literal_key(key: &str) -> String {
    match key {
        "relayhost" => key.to_string(),
        domain => format!("transports.{domain}"),
    }
}

/// The keys of `map` (the config section `section`, keyed by recipient domain) in the
/// lowercase A-label form recipient domains have, each with the key as written and its value.
/// A key that is not a domain, or that has the same form as an earlier one, is a problem.
fn domain_keys<'a, V>(
    section: &str,
    map: &'a BTreeMap<String, V>,
    errors: &mut Vec<String>,
) -> Vec<(&'a str, String, &'a V)> {
    let mut out: Vec<(&str, String, &V)> = Vec::new();
    for (key, value) in map {
        match hedwig_core::address::parse_domain(key) {
            Ok(domain) => match out.iter().find(|(_, d, _)| *d == domain) {
                Some((twin, _, _)) => errors.push(format!(
                    "{section}.{key}: the same domain as {section}.{twin}"
                )),
                None => out.push((key, domain, value)),
            },
            Err(e) => errors.push(format!("{section}.{key}: not a domain ({e})")),
        }
    }
    out
}

/// Loads the config from `path` (optional) and the environment.
pub fn load(path: Option<&Path>) -> Result<Config, hedwig_core::config::ConfigError> {
    hedwig_core::config::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig_core::config::load_from_env;

    #[test]
    fn file_and_env_layers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(
            &path,
            "hostname: mail.example.com\nretry:\n  first: 2s\n  max_lifetime: 1m\n\
             transports:\n  example.org: \"[10.0.0.1]:2525\"\n\
             tls:\n  domains:\n    bank.example: required\n",
        )
        .unwrap();
        let c: Config = load_from_env(
            Some(&path),
            [
                ("HEDWIG_BEANSTALKD", "10.1.1.1:11300"),
                ("HEDWIG_CONCURRENCY", "4"),
                ("HEDWIG_TIMEOUTS__RCPT", "7s"),
            ],
        )
        .unwrap();
        assert_eq!(c.beanstalkd, ["10.1.1.1:11300"]);
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.timeouts.rcpt, Duration::from_secs(7));
        assert_eq!(c.timeouts.mail, Duration::from_secs(300));
        assert_eq!(c.retry.first, Duration::from_secs(2));
        assert_eq!(c.retry.max_lifetime, Duration::from_secs(60));
        assert_eq!(c.tls.mode("bank.example"), TlsMode::Required);
        assert_eq!(c.tls.mode("other.example"), TlsMode::Opportunistic);
        assert!(c.check().is_ok(), "{:?}", c.check().err());
    }

    #[test]
    fn tls_rpt_settings_are_checked() {
        let mut c = Config {
            hostname: "relay.example.com".into(),
            ..Config::default()
        };
        assert!(!c.tls_rpt.enabled, "off by default");
        c.tls_rpt.enabled = true;
        assert!(c.check().is_ok(), "{:?}", c.check().err());
        c.mta_sts.enabled = false;
        c.tls_rpt.interval = Duration::ZERO;
        c.tls_rpt.sender = "not an address".into();
        let errors = c.check().unwrap_err().join("\n");
        assert!(
            errors.contains("tls_rpt.enabled: needs mta_sts.enabled"),
            "{errors}"
        );
        assert!(errors.contains("tls_rpt.interval"), "{errors}");
        assert!(errors.contains("tls_rpt.sender"), "{errors}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        for (yaml, key) in [
            ("hostnam: x\n", "hostnam"),
            ("timeouts:\n  rcpt: soon\n", "rcpt"),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let err = load_from_env::<Config, _, _, _>(Some(&path), [("", ""); 0])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn check_finds_semantic_errors() {
        let c = Config {
            relayhost: Some("[unclosed:25".into()),
            return_path: ReturnPath {
                default: Some("not an address".into()),
                hosts: Default::default(),
            },
            nameservers: vec!["not-an-ip".into()],
            transports: [("a.example".to_string(), "capture".to_string())].into(),
            concurrency: 0,
            tube_prefix: "bad prefix".into(),
            ..Config::default()
        };
        let errors = c.check().unwrap_err().join("\n");
        for key in [
            "tube_prefix",
            "hostname",
            "relayhost",
            "nameservers",
            "transports.a.example",
            "concurrency",
        ] {
            assert!(errors.contains(key), "{key} missing in {errors}");
        }
    }

    #[test]
    fn check_parses_routes_and_domain_keys_once() {
        let c = Config {
            hostname: "relay.example".into(),
            relayhost: Some("Smart.Example:587".into()),
            nameservers: vec!["127.0.0.1".into()],
            transports: [("Bücher.Example".to_string(), "[10.0.0.1]".to_string())].into(),
            tls: Tls {
                domains: [("BANK.example".to_string(), TlsMode::Required)].into(),
                ..Tls::default()
            },
            ..Config::default()
        };
        let s = c.check().unwrap();
        assert_eq!(
            s.nameservers,
            ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            s.routes.route("xn--bcher-kva.example"),
            Route::Smtp(Nexthop::Direct {
                host: "10.0.0.1".into(),
                port: 25
            })
        );
        assert_eq!(
            s.routes.route("other.example"),
            Route::Smtp(Nexthop::Mx {
                host: "smart.example".into(),
                port: 587
            })
        );
        assert_eq!(s.config.tls.mode("bank.example"), TlsMode::Required);
        let web1 = Config {
            return_path: ReturnPath {
                default: None,
                hosts: [("Web1.Example.".to_string(), "b@relay.example".to_string())].into(),
            },
            ..c.clone()
        };
        let s = web1.check().unwrap();
        assert_eq!(
            s.config.return_path.apply("web1.example", "a@b"),
            "b@relay.example"
        );
        let twins = Config {
            tls: Tls {
                domains: [
                    ("a.example".to_string(), TlsMode::None),
                    ("A.example".to_string(), TlsMode::Required),
                ]
                .into(),
                ..Tls::default()
            },
            ..c
        };
        let errors = twins.check().unwrap_err().join("\n");
        assert!(
            errors.contains("tls.domains.a.example: the same domain as tls.domains.A.example"),
            "{errors}"
        );
    }

    #[test]
    fn logins_are_checked_and_loaded_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let auth = |file: &Path| RelayAuth {
            user: "hedwig".into(),
            password_file: file.to_path_buf(),
            tls: None,
            mechanism: None,
            allow_unverified: false,
        };
        let base = Config {
            hostname: "relay.example".into(),
            ..Config::default()
        };
        // No relayhost to log in to; a transport_auth without a transport; a missing file.
        let bad = Config {
            relay_auth: Some(auth(&pw)),
            transports: [("b.example".to_string(), "[10.0.0.2]:465".to_string())].into(),
            transport_auth: [
                ("a.example".to_string(), auth(&pw)),
                ("B.example".to_string(), auth(&dir.path().join("missing"))),
            ]
            .into(),
            ..base.clone()
        };
        let errors = bad.check().unwrap_err().join("\n");
        for want in [
            "relay_auth: there is no relayhost",
            "transport_auth.a.example: transports has no SMTP nexthop",
            "transport_auth.B.example.password_file: cannot read",
        ] {
            assert!(errors.contains(want), "{want} missing in {errors}");
        }
        assert!(!errors.contains("s3cret"));

        let good = Config {
            relayhost: Some("[smtp.example.com]:587".into()),
            relay_auth: Some(auth(&pw)),
            transports: [("B.example".to_string(), "[10.0.0.2]:465".to_string())].into(),
            transport_auth: [("b.example".to_string(), auth(&pw))].into(),
            ..base
        };
        let s = good.check().unwrap();
        let relay = s.routes.login("other.example").unwrap();
        assert_eq!(
            (relay.transport.as_str(), relay.tls, relay.password()),
            (
                "relayhost [smtp.example.com]:587",
                LoginTls::Starttls,
                "s3cret"
            )
        );
        let b = s.routes.login("b.example").unwrap();
        assert_eq!(
            b.tls,
            LoginTls::Wrapper,
            "port 465 means TLS from the first byte"
        );
        assert_eq!(b.transport, "transports.b.example [10.0.0.2]:465");
        // An old config without logins: no AUTH anywhere.
        let plain = Config {
            relayhost: Some("[smtp.example.com]:25".into()),
            hostname: "relay.example".into(),
            ..Config::default()
        };
        assert!(plain.check().unwrap().routes.login("x.example").is_none());
    }

    #[test]
    fn relay_auth_from_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(
            &path,
            "relayhost: \"[smtp.example.com]:465\"\nrelay_auth:\n  user: u\n  \
             password_file: /run/secrets/relay\n  tls: wrapper\n  mechanism: login\n",
        )
        .unwrap();
        let c: Config = load_from_env(Some(&path), [("", ""); 0]).unwrap();
        let a = c.relay_auth.unwrap();
        assert_eq!(a.tls, Some(LoginTls::Wrapper));
        assert_eq!(a.mechanism, Some(crate::login::Mechanism::Login));
        std::fs::write(&path, "relay_auth:\n  user: u\n  password: inline\n").unwrap();
        let err = load_from_env::<Config, _, _, _>(Some(&path), [("", ""); 0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("password"), "{err}");
    }

    #[test]
    fn pools_from_yaml_and_checked_against_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(
            &path,
            "hostname: relay.example\n\
             pools:\n\
            \x20 bulk:\n\
            \x20   addresses: [192.0.2.10, \"2001:db8::10\"]\n\
            \x20   ehlo: Bulk.Example.\n\
            \x20 tx:\n\
            \x20   addresses: [\"2001:db8::20\"]\n\
            \x20   ehlo: tx.example\n\
             pool_hosts:\n\
            \x20 Web1.Example: bulk\n\
             pool_sender_domains:\n\
            \x20 receipts.example: tx\n\
             default_pool: bulk\n",
        )
        .unwrap();
        let c: Config = load_from_env(Some(&path), [("", ""); 0]).unwrap();
        let s = c.check().unwrap();
        let bulk = s.pools.choose("web1.example", "a@news.example").unwrap();
        assert_eq!(
            (bulk.name.as_str(), bulk.ehlo.as_str()),
            ("bulk", "bulk.example")
        );
        assert_eq!(
            s.pools
                .choose("web1.example", "a@receipts.example")
                .unwrap()
                .name,
            "tx"
        );
        // An IPv4 relayhost cannot be reached from the IPv6-only pool.
        let v4_relay = Config {
            relayhost: Some("[192.0.2.25]:587".into()),
            ..c.clone()
        };
        let errors = v4_relay.check().unwrap_err().join("\n");
        assert!(
            errors.contains("pools.tx: no IPv4 address, but relayhost is 192.0.2.25"),
            "{errors}"
        );
        // No pools: nothing chosen, as before pools.
        let plain = Config {
            hostname: "relay.example".into(),
            ..Config::default()
        };
        assert!(plain
            .check()
            .unwrap()
            .pools
            .choose("web1.example", "a@b")
            .is_none());
        std::fs::write(
            &path,
            "pools:
  bulk:
    addresses: [192.0.2.10]
",
        )
        .unwrap();
        let err = load_from_env::<Config, _, _, _>(Some(&path), [("", ""); 0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ehlo"), "{err}");
    }

    #[test]
    fn return_path_overrides() {
        let rp = ReturnPath {
            default: Some("bounces@relay.example".into()),
            hosts: [("web1.example".to_string(), "web1@relay.example".to_string())].into(),
        };
        assert_eq!(rp.apply("WEB1.example", "a@b"), "web1@relay.example");
        assert_eq!(rp.apply("web2.example", "a@b"), "bounces@relay.example");
        assert_eq!(rp.apply("web2.example", ""), "");
        assert_eq!(ReturnPath::default().apply("h", "a@b"), "a@b");
    }
}
