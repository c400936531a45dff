//! mailman's configuration: one struct, loaded once (YAML + `HEDWIG_…` variables, see
//! [`hedwig_core::config`]), checked into [`Settings`] with every problem reported at once.
//!
//! The keys of the original hedwig mailman still work: `nest` (the postoffice URL), `secret`
//! (the key), `listen: {host, port}` and `fqdn`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hedwig_core::config::{one_or_many, read_secret, ByteSize, OneOrMany};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// Everything `mailman` reads from its YAML file and `HEDWIG_…` variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SMTP listen addresses (`host:port`). The old form `{host, port}` is read too.
    #[serde(deserialize_with = "listen_compat")]
    pub listen: Vec<String>,
    /// Client networks allowed to send; everyone else gets `554` at connect.
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_networks: Vec<IpNet>,
    /// This host's fully qualified name: sent to the postoffice, used in the greeting and the
    /// `Received:` header.
    pub fqdn: String,
    /// This host's key (from `keygen <fqdn>`).
    pub key: Option<String>,
    /// A file holding the key; wins over `key`.
    pub key_file: Option<PathBuf>,
    /// Refuse to start when `key_file` is readable by group or others (else: a warning).
    pub require_safe_keys: bool,
    /// Postoffice URLs, tried in order.
    #[serde(deserialize_with = "one_or_many")]
    pub postoffice: Vec<String>,
    /// PEM file of CA certificate(s) trusted for an `https://` post office, in addition to the
    /// built-in public roots (for a post office with a certificate from a private CA).
    pub ca_file: Option<PathBuf>,
    /// Sign posts (`X-Hedwig-Signature`; the key never leaves this host). `false` only for
    /// post offices older than signed requests, which look for the key in the body.
    pub sign_posts: bool,
    /// Old hedwig: the postoffice URL (used when `postoffice` is empty).
    pub nest: Option<String>,
    /// Old hedwig: the key (used when `key` and `key_file` are unset).
    pub secret: Option<String>,
    /// Directory of the local spool (must be on persistent storage).
    pub spool_dir: PathBuf,
    /// Total size of spooled messages above which new messages get `452 4.3.1`.
    pub spool_max: ByteSize,
    /// Largest message accepted, in octets.
    pub max_message_size: ByteSize,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Most SMTP connections at once; more get `421` and are closed.
    pub max_connections: usize,
    /// Most SMTP connections at once from one client address; more get `421 4.7.0` (Postfix's
    /// `smtpd_client_connection_count_limit`). Default: half of `max_connections`.
    pub max_connections_per_client: Option<usize>,
    /// Longest time for one whole command line to arrive (not reset by each byte).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest wait for the next chunk of the message in DATA.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Slowest average rate, in octets per second, at which a message may arrive once
    /// `data_timeout` has passed in DATA (Postfix's `smtpd_min_data_rate`); 0 disables.
    pub min_data_rate: u64,
    /// Longest time one SMTP session may last, whatever it does.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Lines ending in a bare LF: `normalize` (store as CRLF; never ends DATA) or `reject`
    /// (`550 5.5.2` and close), like Postfix 3.9's `smtpd_forbid_bare_newline`.
    pub bare_newline: crate::smtp::data::BareNewline,
    /// A message whose header would hold more `Received:` lines than this (counting the one
    /// mailman adds) is refused with `554 5.4.6` (Postfix's `hopcount_limit`).
    pub max_received_headers: usize,
    /// Header fields added when missing, each switchable (`date`, `message_id`, `from`, `to`,
    /// `strip_bcc`); see [`crate::fixup`].
    pub add_missing_headers: crate::fixup::AddMissingHeaders,
    /// Refuse with `554 5.6.0` at DATA a message with more than one `From:`, a `From:`
    /// without an address, a header line over 998 octets, or raw 8-bit header bytes without
    /// `SMTPUTF8`.
    pub refuse_bad_headers: bool,
    /// With `refuse_bad_headers`: also refuse raw 8-bit header bytes without `SMTPUTF8`
    /// (`false` lets an application's raw UTF-8 `Subject:` through while the other refusals
    /// stay on).
    pub refuse_8bit_headers: bool,
    /// Add `X-Hedwig-App: <name>` (the container's name or the SMTP AUTH login) after
    /// mailman's `Received:` to messages from a known app, so that recipients see it. Off: the
    /// name goes to the post office (logs, ledger, events) only.
    pub app_header: bool,
    /// How often the key is checked against the postoffice (`/health` turns unhealthy while
    /// it is refused).
    #[serde(with = "humantime_serde")]
    pub key_check_interval: Duration,
    /// How long a client waits for the postoffice's answer before getting "250 queued locally".
    #[serde(with = "humantime_serde")]
    pub forward_deadline: Duration,
    /// Time allowed for one HTTP post (connect + answer) by the background retries.
    #[serde(with = "humantime_serde")]
    pub forward_timeout: Duration,
    /// First retry delay of a spooled message; doubles on each failure...
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// ...up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// On SIGTERM, how long open sessions may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Address of the `/health` and `/metrics` HTTP endpoint; empty to disable.
    pub http_listen: String,
    /// PEM certificate chain for STARTTLS (optional).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for STARTTLS.
    pub tls_key: Option<PathBuf>,
    /// Container identity from the Docker Engine API (off unless `docker.socket` is set);
    /// see [`crate::docker`].
    pub docker: DockerConfig,
    /// SMTP AUTH (issue 17): off unless `auth.users_file` is set.
    pub auth: AuthConfig,
}

/// The `docker:` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The Engine API's unix socket (e.g. `/var/run/docker.sock`, mounted read-only); unset:
    /// clients are known by address only.
    pub socket: Option<PathBuf>,
    /// Longest wait of a new session for a refresh when its address is on a Docker network but
    /// not known yet (a container that just started).
    #[serde(with = "humantime_serde")]
    pub lookup_timeout: Duration,
    /// Full refresh at least this often, besides the refreshes on Docker events.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Most container addresses kept.
    pub max_entries: usize,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: None,
            lookup_timeout: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(60),
            max_entries: 4096,
        }
    }
}

/// The `auth` section: SMTP AUTH PLAIN/LOGIN with a login per app (see [`crate::auth`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The credentials file (`name:argon2-hash[:lane]` lines, from `mailman passwd NAME`);
    /// AUTH is offered only when it is set.
    pub users_file: Option<PathBuf>,
    /// MAIL before a successful AUTH gets `530 5.7.0`.
    pub require: bool,
    /// Client networks where AUTH is offered without TLS (elsewhere only after STARTTLS).
    #[serde(deserialize_with = "one_or_many")]
    pub plaintext_networks: Vec<IpNet>,
    /// Failed AUTHs from one client address (within `failure_window`) after which its
    /// session is closed with `421`, and its later AUTHs too until the window has passed.
    pub max_failures: u32,
    /// Wait before a `535`, doubled for each earlier failure of the client (at most 30 s).
    #[serde(with = "humantime_serde")]
    pub failure_delay: Duration,
    /// How long a client's failures are remembered after its last one.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: None,
            require: false,
            plaintext_networks: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            max_failures: 5,
            failure_delay: Duration::from_secs(1),
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

impl AuthConfig {
    /// The checked settings: `None` when AUTH is off; problems are added to `errors`.
    fn check(&self, errors: &mut Vec<String>) -> Option<Arc<crate::auth::Auth>> {
        if self.max_failures == 0 {
            errors.push("auth.max_failures: must be at least 1".into());
        }
        if self.failure_window.is_zero() {
            errors.push("auth.failure_window: must be more than 0".into());
        }
        let Some(path) = &self.users_file else {
            if self.require {
                errors.push("auth.require: needs auth.users_file".into());
            }
            return None;
        };
        let limits = crate::auth::Limits {
            require: self.require,
            plaintext_networks: self.plaintext_networks.clone(),
            max_failures: self.max_failures.max(1),
            failure_delay: self.failure_delay,
            failure_window: self.failure_window,
        };
        match crate::auth::Auth::open(path, limits) {
            Ok(auth) => Some(Arc::new(auth)),
            Err(e) => {
                errors.push(format!("auth.users_file: {e}"));
                None
            }
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["127.0.0.1:2525".into()],
            allowed_networks: ["127.0.0.0/8", "::1/128", "172.16.0.0/12"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            fqdn: String::new(),
            key: None,
            key_file: None,
            sign_posts: true,
            ca_file: None,
            require_safe_keys: false,
            postoffice: Vec::new(),
            nest: None,
            secret: None,
            spool_dir: PathBuf::from("/var/spool/mailman"),
            spool_max: ByteSize(1_000_000_000),
            max_message_size: ByteSize(25_000_000),
            max_recipients: 100,
            max_connections: 100,
            max_connections_per_client: None,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            min_data_rate: 500,
            session_timeout: Duration::from_secs(1800),
            bare_newline: crate::smtp::data::BareNewline::Normalize,
            max_received_headers: 50,
            add_missing_headers: crate::fixup::AddMissingHeaders::default(),
            refuse_bad_headers: true,
            refuse_8bit_headers: true,
            app_header: false,
            key_check_interval: Duration::from_secs(60),
            forward_deadline: Duration::from_secs(5),
            forward_timeout: Duration::from_secs(60),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(30),
            http_listen: "127.0.0.1:9125".into(),
            tls_cert: None,
            tls_key: None,
            docker: DockerConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// `listen` as a list, one string, or the old `{host, port}` map.
fn listen_compat<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Old {
        host: String,
        port: u16,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Listen {
        New(OneOrMany<String>),
        Old(Old),
    }
    Ok(match Listen::deserialize(de)? {
        Listen::New(list) => list.into_vec(),
        Listen::Old(Old { host, port }) if host.contains(':') => vec![format!("[{host}]:{port}")],
        Listen::Old(Old { host, port }) => vec![format!("{host}:{port}")],
    })
}

/// A checked configuration, ready to run; the fields mean what the [`Config`] keys of the same
/// name mean, with the old aliases resolved and files read.
#[derive(Clone)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    pub allowed_networks: Vec<IpNet>,
    /// Normalised (lowercase, no trailing dot).
    pub fqdn: String,
    pub key: String,
    pub sign_posts: bool,
    /// Extra trusted roots for the post office's certificate (`ca_file`).
    pub postoffice_roots: Vec<reqwest::Certificate>,
    pub postoffice: Vec<reqwest::Url>,
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub min_data_rate: u64,
    pub session_timeout: Duration,
    pub bare_newline: crate::smtp::data::BareNewline,
    pub max_received_headers: usize,
    pub add_missing_headers: crate::fixup::AddMissingHeaders,
    pub refuse_bad_headers: bool,
    pub refuse_8bit_headers: bool,
    pub app_header: bool,
    pub key_check_interval: Duration,
    pub forward_deadline: Duration,
    pub forward_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub shutdown_timeout: Duration,
    pub http_listen: Option<SocketAddr>,
    /// Present when STARTTLS is offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Present when `docker.socket` is set.
    pub docker: Option<crate::docker::DockerSettings>,
    /// Present when SMTP AUTH is offered (`auth.users_file`).
    pub auth: Option<Arc<crate::auth::Auth>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("fqdn", &self.fqdn)
            .field(
                "postoffice",
                &self.postoffice.iter().map(redact_url).collect::<Vec<_>>(),
            )
            .field("spool_dir", &self.spool_dir)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The settings as `mailman check-config` prints them: one `key value` line each, the
    /// key never shown and URLs without user name or password.
    pub fn summary(&self) -> String {
        let list = |items: Vec<String>| items.join(", ");
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        let rows: Vec<(&str, String)> = vec![
            (
                "listen",
                list(self.listen.iter().map(|a| a.to_string()).collect()),
            ),
            (
                "allowed_networks",
                list(
                    self.allowed_networks
                        .iter()
                        .map(|n| n.to_string())
                        .collect(),
                ),
            ),
            ("fqdn", self.fqdn.clone()),
            (
                "key",
                format!("set ({} characters, not shown)", self.key.len()),
            ),
            (
                "postoffice",
                list(self.postoffice.iter().map(redact_url).collect()),
            ),
            ("spool_dir", self.spool_dir.display().to_string()),
            ("spool_max", ByteSize(self.spool_max).to_string()),
            (
                "max_message_size",
                ByteSize(self.max_message_size as u64).to_string(),
            ),
            ("max_recipients", self.max_recipients.to_string()),
            (
                "max_received_headers",
                self.max_received_headers.to_string(),
            ),
            ("add_missing_headers", self.add_missing_headers.summary()),
            ("refuse_bad_headers", self.refuse_bad_headers.to_string()),
            ("refuse_8bit_headers", self.refuse_8bit_headers.to_string()),
            ("app_header", self.app_header.to_string()),
            ("max_connections", self.max_connections.to_string()),
            (
                "max_connections_per_client",
                self.max_connections_per_client.to_string(),
            ),
            ("command_timeout", secs(self.command_timeout)),
            ("data_timeout", secs(self.data_timeout)),
            ("min_data_rate", format!("{} octets/s", self.min_data_rate)),
            ("session_timeout", secs(self.session_timeout)),
            ("bare_newline", self.bare_newline.to_string()),
            ("forward_deadline", secs(self.forward_deadline)),
            ("forward_timeout", secs(self.forward_timeout)),
            (
                "retry_min / retry_max",
                format!("{} / {}", secs(self.retry_min), secs(self.retry_max)),
            ),
            ("key_check_interval", secs(self.key_check_interval)),
            ("shutdown_timeout", secs(self.shutdown_timeout)),
            (
                "http_listen",
                self.http_listen
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "disabled".into()),
            ),
            (
                "docker.socket",
                match &self.docker {
                    Some(d) => format!(
                        "{} (lookup_timeout {}, refresh_interval {}, max_entries {})",
                        d.socket.display(),
                        secs(d.lookup_timeout),
                        secs(d.refresh_interval),
                        d.max_entries
                    ),
                    None => "not set: clients are known by address".into(),
                },
            ),
            (
                "starttls",
                if self.tls.is_some() {
                    "offered"
                } else {
                    "not offered"
                }
                .into(),
            ),
            (
                "auth",
                match &self.auth {
                    None => "not offered".into(),
                    Some(auth) => format!(
                        "{} logins{}; without TLS from {}; {} failures close",
                        auth.logins(),
                        if auth.require { ", required" } else { "" },
                        list(
                            auth.plaintext_networks
                                .iter()
                                .map(|n| n.to_string())
                                .collect()
                        ),
                        auth.max_failures,
                    ),
                },
            ),
        ];
        let mut out = String::new();
        for (key, value) in rows {
            out.push_str(&format!("  {key:<28} {value}\n"));
        }
        out
    }

    /// Whether `ip` may send.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allowed_networks.iter().any(|net| net.contains(&ip))
    }
}

/// A URL as it may be logged or printed: any user name and password are replaced with
/// `redacted` (issue 11 F9: a password in the postoffice URL is never logged).
pub fn redact_url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("redacted");
    shown.to_string()
}

/// A URL that did not parse, with anything before an `@` in its authority replaced.
fn redact_raw(u: &str) -> String {
    let (scheme, rest) = match u.find("://") {
        Some(i) => (&u[..i + 3], &u[i + 3..]),
        None => ("", u),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}redacted{}", &rest[at..]),
        None => u.to_string(),
    }
}

fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

impl Config {
    /// Checks everything and returns the settings, or every problem found, one per entry,
    /// each naming its key.
    pub fn check(&self) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let mut listen = Vec::new();
        if self.listen.is_empty() {
            errors.push("listen: at least one address is needed".to_string());
        }
        for l in &self.listen {
            match resolve_addr(l) {
                Ok(a) => listen.push(a),
                Err(e) => errors.push(format!("listen: {l:?} is not host:port ({e})")),
            }
        }
        let fqdn = match hedwig_core::key::normalize_fqdn(&self.fqdn) {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("fqdn: {e}"));
                String::new()
            }
        };
        if let Some(path) = &self.key_file {
            if let Err(e) = hedwig_core::keyfile::check("key file", path, self.require_safe_keys) {
                errors.push(format!("key_file: {e}"));
            }
        }
        let key = match read_secret(
            self.key.as_deref().or(self.secret.as_deref()),
            self.key_file.as_deref(),
        ) {
            Ok(Some(k)) => k,
            Ok(None) => {
                errors.push("key: no key given (key, key_file, or the old secret)".to_string());
                String::new()
            }
            Err(e) => {
                errors.push(format!("key_file: {e}"));
                String::new()
            }
        };
        // `HEDWIG_POSTOFFICE=http://a/,http://b/` is a list too (a URL has no bare comma).
        let mut urls: Vec<String> = self
            .postoffice
            .iter()
            .flat_map(|u| hedwig_core::config::split_list(u))
            .collect();
        if urls.is_empty() {
            urls.extend(self.nest.clone());
        }
        if urls.is_empty() {
            errors.push("postoffice: no URL given (postoffice, or the old nest)".to_string());
        }
        let mut postoffice = Vec::new();
        for u in &urls {
            match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => postoffice.push(url),
                Ok(url) => errors.push(format!(
                    "postoffice: {:?} is not an http(s) URL",
                    redact_url(&url)
                )),
                Err(e) => errors.push(format!("postoffice: {:?}: {e}", redact_raw(u))),
            }
        }
        if self.allowed_networks.is_empty() {
            errors.push("allowed_networks: empty, nobody could send".to_string());
        }
        let http_listen = if self.http_listen.trim().is_empty() {
            None
        } else {
            match resolve_addr(&self.http_listen) {
                Ok(a) => Some(a),
                Err(e) => {
                    errors.push(format!("http_listen: {:?}: {e}", self.http_listen));
                    None
                }
            }
        };
        let max_connections_per_client = self
            .max_connections_per_client
            .unwrap_or((self.max_connections / 2).max(1));
        for (name, value) in [
            ("max_recipients", self.max_recipients),
            ("max_connections", self.max_connections),
            ("max_connections_per_client", max_connections_per_client),
            ("max_received_headers", self.max_received_headers),
        ] {
            if value == 0 {
                errors.push(format!("{name}: must be at least 1"));
            }
        }
        if self.max_message_size.0 == 0 {
            errors.push("max_message_size: must be more than 0".into());
        }
        if self.spool_max.0 < self.max_message_size.0 {
            errors.push(format!(
                "spool_max: {} is smaller than max_message_size ({})",
                self.spool_max, self.max_message_size
            ));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            errors.push("retry_min/retry_max: need 0 < retry_min <= retry_max".into());
        }
        for (name, value) in [
            ("command_timeout", self.command_timeout),
            ("data_timeout", self.data_timeout),
            ("forward_deadline", self.forward_deadline),
            ("forward_timeout", self.forward_timeout),
            ("session_timeout", self.session_timeout),
            ("key_check_interval", self.key_check_interval),
        ] {
            if value.is_zero() {
                errors.push(format!("{name}: must be more than 0"));
            }
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("tls_cert/tls_key: {e}"));
                    None
                }
            },
            _ => {
                errors.push("tls_cert/tls_key: give both or neither".into());
                None
            }
        };
        let postoffice_roots = match &self.ca_file {
            None => Vec::new(),
            Some(path) => match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
                }) {
                Ok(certs) if !certs.is_empty() => certs,
                Ok(_) => {
                    errors.push(format!("ca_file: {}: no certificate found", path.display()));
                    Vec::new()
                }
                Err(e) => {
                    errors.push(format!("ca_file: {}: {e}", path.display()));
                    Vec::new()
                }
            },
        };
        // An empty path (`HEDWIG_DOCKER__SOCKET=`) is off, like no path.
        let socket = self
            .docker
            .socket
            .as_ref()
            .filter(|s| !s.as_os_str().is_empty());
        let docker = match socket {
            None => None,
            Some(socket) => {
                let d = &self.docker;
                if d.lookup_timeout.is_zero() || d.lookup_timeout > Duration::from_secs(10) {
                    errors
                        .push("docker.lookup_timeout: must be more than 0 and at most 10s".into());
                }
                if d.refresh_interval < Duration::from_secs(1) {
                    errors.push("docker.refresh_interval: must be at least 1s".into());
                }
                if d.max_entries == 0 {
                    errors.push("docker.max_entries: must be at least 1".into());
                }
                Some(crate::docker::DockerSettings {
                    socket: socket.clone(),
                    lookup_timeout: d.lookup_timeout,
                    refresh_interval: d.refresh_interval,
                    max_entries: d.max_entries,
                })
            }
        };
        let auth = self.auth.check(&mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Settings {
            listen,
            allowed_networks: self.allowed_networks.clone(),
            fqdn,
            key,
            sign_posts: self.sign_posts,
            postoffice_roots,
            postoffice,
            spool_dir: self.spool_dir.clone(),
            spool_max: self.spool_max.0,
            max_message_size: self.max_message_size.as_usize(),
            max_recipients: self.max_recipients,
            max_connections: self.max_connections,
            max_connections_per_client,
            command_timeout: self.command_timeout,
            data_timeout: self.data_timeout,
            min_data_rate: self.min_data_rate,
            session_timeout: self.session_timeout,
            bare_newline: self.bare_newline,
            max_received_headers: self.max_received_headers,
            add_missing_headers: self.add_missing_headers,
            refuse_bad_headers: self.refuse_bad_headers,
            refuse_8bit_headers: self.refuse_8bit_headers,
            app_header: self.app_header,
            key_check_interval: self.key_check_interval,
            forward_deadline: self.forward_deadline,
            forward_timeout: self.forward_timeout,
            retry_min: self.retry_min,
            retry_max: self.retry_max,
            shutdown_timeout: self.shutdown_timeout,
            http_listen,
            tls,
            docker,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig_core::config::load_from_env;

    #[test]
    fn old_hedwig_config_file_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailman.yaml");
        std::fs::write(
            &path,
            "nest: http://po.example:8025/\nsecret: abc123\nfqdn: Web1.Example.com.\n\
listen:\n  host: 127.0.0.2\n  port: 25\n",
        )
        .unwrap();
        let c: Config = load_from_env(Some(&path), [("", ""); 0]).unwrap();
        let s = c.check().unwrap();
        assert_eq!(
            s.listen,
            vec!["127.0.0.2:25".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(s.key, "abc123");
        assert_eq!(s.fqdn, "web1.example.com");
        assert_eq!(s.postoffice[0].as_str(), "http://po.example:8025/");
    }

    #[test]
    fn env_overrides_and_lists() {
        let c: Config = load_from_env(
            None,
            [
                ("HEDWIG_FQDN", "h.example"),
                ("HEDWIG_KEY", "k"),
                ("HEDWIG_POSTOFFICE", "[http://a:1, http://b:2]"),
                ("HEDWIG_LISTEN", "127.0.0.3:2525"),
                ("HEDWIG_ALLOWED_NETWORKS", "10.0.0.0/8"),
                ("HEDWIG_FORWARD_DEADLINE", "2s"),
                ("HEDWIG_SPOOL_MAX", "100MB"),
            ],
        )
        .unwrap();
        let s = c.check().unwrap();
        assert_eq!(s.postoffice.len(), 2);
        assert_eq!(s.listen[0].port(), 2525);
        assert_eq!(s.forward_deadline, Duration::from_secs(2));
        assert_eq!(s.spool_max, 100_000_000);
        let c: Config = load_from_env(
            None,
            [
                ("HEDWIG_FQDN", "h.example"),
                ("HEDWIG_KEY", "k"),
                ("HEDWIG_POSTOFFICE", "http://a:1/, http://b:2/"),
            ],
        )
        .unwrap();
        let urls: Vec<String> = c
            .check()
            .unwrap()
            .postoffice
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(urls, ["http://a:1/", "http://b:2/"]);
        assert!(s.allowed("10.1.2.3".parse().unwrap()));
        assert!(!s.allowed("127.0.0.1".parse().unwrap()));
        assert!(s.tls.is_none());
    }

    #[test]
    fn docker_is_off_by_default_and_set_from_the_environment() {
        let base = [
            ("HEDWIG_FQDN", "h.example"),
            ("HEDWIG_KEY", "k"),
            ("HEDWIG_POSTOFFICE", "http://a:1/"),
        ];
        let c: Config = load_from_env(None, base).unwrap();
        assert!(c.check().unwrap().docker.is_none());
        let mut vars = base.to_vec();
        vars.push(("HEDWIG_DOCKER__SOCKET", ""));
        let c: Config = load_from_env(None, vars).unwrap();
        assert!(c.check().unwrap().docker.is_none(), "empty is off");
        let mut vars = base.to_vec();
        vars.push(("HEDWIG_DOCKER__SOCKET", "/var/run/docker.sock"));
        vars.push(("HEDWIG_DOCKER__LOOKUP_TIMEOUT", "500ms"));
        let c: Config = load_from_env(None, vars).unwrap();
        let s = c.check().unwrap();
        let d = s.docker.as_ref().unwrap();
        assert_eq!(d.socket, PathBuf::from("/var/run/docker.sock"));
        assert_eq!(d.lookup_timeout, Duration::from_millis(500));
        assert_eq!(d.refresh_interval, Duration::from_secs(60));
        assert!(s.summary().contains("docker.socket"));
        let bad = Config {
            docker: DockerConfig {
                socket: Some("/x".into()),
                lookup_timeout: Duration::from_secs(60),
                max_entries: 0,
                ..DockerConfig::default()
            },
            ..c
        };
        let errors = bad.check().unwrap_err();
        assert!(errors
            .iter()
            .any(|e| e.starts_with("docker.lookup_timeout")));
        assert!(errors.iter().any(|e| e.starts_with("docker.max_entries")));
    }

    #[test]
    fn defaults_allow_loopback_and_docker_only() {
        let s = Config {
            fqdn: "h.example".into(),
            key: Some("k".into()),
            postoffice: vec!["http://127.0.0.1:8025".into()],
            ..Config::default()
        }
        .check()
        .unwrap();
        for ip in ["127.0.0.1", "::1", "172.17.0.5", "::ffff:172.17.0.5"] {
            assert!(s.allowed(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "192.168.1.1", "172.32.0.1", "2001:db8::1"] {
            assert!(!s.allowed(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let c = Config {
            listen: vec!["nonsense".into()],
            postoffice: vec!["ftp://x".into()],
            max_recipients: 0,
            spool_max: ByteSize(10),
            tls_cert: Some("/nonexistent".into()),
            ..Config::default()
        };
        let errors = c.check().unwrap_err();
        let text = errors.join("\n");
        for key in [
            "listen",
            "fqdn",
            "key",
            "postoffice",
            "max_recipients",
            "spool_max",
            "tls_cert",
        ] {
            assert!(text.contains(key), "{key} missing in:\n{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "fqdn: a\nlisen: x\n").unwrap();
        let err = load_from_env::<Config, _, _, _>(Some(&path), [("", ""); 0]).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn header_fixups_are_on_by_default_and_switch_one_by_one() {
        let base = [
            ("HEDWIG_FQDN", "h.example"),
            ("HEDWIG_KEY", "k"),
            ("HEDWIG_POSTOFFICE", "http://a:1/"),
        ];
        let c: Config = load_from_env(None, base).unwrap();
        let s = c.check().unwrap();
        assert_eq!(
            s.add_missing_headers,
            crate::fixup::AddMissingHeaders::default()
        );
        assert!(s.add_missing_headers.strip_bcc && s.refuse_bad_headers);
        let vars = base.into_iter().chain([
            ("HEDWIG_ADD_MISSING_HEADERS__STRIP_BCC", "false"),
            ("HEDWIG_REFUSE_BAD_HEADERS", "false"),
        ]);
        let s = load_from_env::<Config, _, _, _>(None, vars)
            .unwrap()
            .check()
            .unwrap();
        assert!(!s.add_missing_headers.strip_bcc && s.add_missing_headers.date);
        assert!(!s.refuse_bad_headers);
        assert!(s.summary().contains("date, message_id, from, to\n"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(
            &path,
            "fqdn: h.example\nkey: k\npostoffice: http://a:1/\nadd_missing_headers:\n  date: false\n  mesage_id: false\n",
        )
        .unwrap();
        let err = load_from_env::<Config, _, _, _>(Some(&path), [("", ""); 0]).unwrap_err();
        assert!(err.to_string().contains("mesage_id"), "{err}");
    }

    #[test]
    fn auth_settings() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = [
            ("HEDWIG_FQDN", "h.example".to_string()),
            ("HEDWIG_KEY", "k".into()),
            ("HEDWIG_POSTOFFICE", "http://a:1/".into()),
        ];
        let s = load_from_env::<Config, _, _, _>(None, base.clone())
            .unwrap()
            .check()
            .unwrap();
        assert!(s.auth.is_none(), "off by default");
        assert!(s
            .summary()
            .contains("auth                         not offered"));
        let c: Config = load_from_env(
            None,
            base.clone()
                .into_iter()
                .chain([("HEDWIG_AUTH__REQUIRE", "true".to_string())]),
        )
        .unwrap();
        let errors = c.check().unwrap_err();
        assert_eq!(errors, ["auth.require: needs auth.users_file"]);
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        let hash = crate::auth::hash_password("pw").unwrap();
        std::fs::write(&users, format!("billing:{hash}:transactional\n")).unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = load_from_env::<Config, _, _, _>(
            None,
            base.clone().into_iter().chain([
                ("HEDWIG_AUTH__USERS_FILE", users.display().to_string()),
                ("HEDWIG_AUTH__PLAINTEXT_NETWORKS", "10.0.0.0/8".into()),
            ]),
        )
        .unwrap()
        .check()
        .unwrap();
        let auth = s.auth.clone().unwrap();
        assert!(auth.policy("10.1.1.1".parse().unwrap()).plaintext);
        assert!(!auth.policy("127.0.0.1".parse().unwrap()).plaintext);
        assert!(s
            .summary()
            .contains("1 logins; without TLS from 10.0.0.0/8"));
        // a file others may read is refused, and so is a bad line, naming the key
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c: Config = load_from_env(
            None,
            base.into_iter()
                .chain([("HEDWIG_AUTH__USERS_FILE", users.display().to_string())]),
        )
        .unwrap();
        let errors = c.check().unwrap_err().join("\n");
        assert!(
            errors.starts_with("auth.users_file: ") && errors.contains("others"),
            "{errors}"
        );
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&users, "billing:plain-password\n").unwrap();
        let errors = c.check().unwrap_err().join("\n");
        assert!(
            errors.contains("line 1: billing: not an argon2"),
            "{errors}"
        );
        assert!(!errors.contains("plain-password"), "{errors}");
    }

    #[test]
    fn key_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "fromfile\n").unwrap();
        let s = Config {
            fqdn: "h.example".into(),
            key: Some("inline".into()),
            key_file: Some(f),
            nest: Some("http://127.0.0.1:1/".into()),
            ..Config::default()
        }
        .check()
        .unwrap();
        assert_eq!(s.key, "fromfile");
    }
}
