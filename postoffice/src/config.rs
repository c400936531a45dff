//! The post office's configuration: one struct, loaded once, checked into [`Settings`] (every
//! problem reported at once, each naming its key), passed down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hedwig_core::config::{read_secret, ByteSize};
use hedwig_queue::tubes::{Tubes, DEFAULT_PREFIX};
use serde::{Deserialize, Serialize};

/// Everything `postoffice` reads from its YAML file and `HEDWIG_…` variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// beanstalkd servers, `host:port` each: a YAML list, or one string with commas
    /// (`HEDWIG_BEANSTALKD=a:11300,b:11300`). Each host's mail goes to one server chosen by a
    /// hash of the host name, and to the next one while that one is down.
    #[serde(deserialize_with = "hedwig_core::config::comma_list")]
    pub beanstalkd: Vec<String>,
    /// Prefix of the tube names (`hedwig`: tubes `hedwig`, `hedwig-failed`, `hedwig-held`,
    /// `hedwig-holds`); the workers must have the same.
    pub tube_prefix: String,
    /// The old name of `tube_prefix`, still read (with a warning) when `tube_prefix` is not set.
    pub tube: Option<String>,
    /// Connections kept open to beanstalkd.
    pub pool_size: usize,
    /// The secret host keys derive from (`keygen secret` makes one).
    pub secret: Option<String>,
    /// A file holding the secret; wins over `secret`.
    pub secret_file: Option<PathBuf>,
    /// Refuse to start when `secret_file` is readable by group or others (else: a warning).
    pub require_safe_keys: bool,
    /// Secrets still accepted during a rotation (keys derived from them keep working).
    pub previous_secrets: Vec<String>,
    /// Largest message accepted (the message bytes, not the HTTP body).
    pub max_message_size: ByteSize,
    /// Hosts whose keys are no longer accepted (403).
    pub revoked: Vec<String>,
    /// Policy for every host without an entry in `hosts`.
    pub default_policy: HostPolicy,
    /// Per-host policy by fqdn; replaces `default_policy` for that host.
    pub hosts: HashMap<String, HostPolicy>,
    /// How long a sender's message id is remembered to answer a repeat with the first queue id.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Most message ids remembered at once (oldest forgotten first).
    pub duplicate_capacity: usize,
    /// beanstalkd priority of new jobs (lower is more urgent) in a lane without its own
    /// `priority`.
    pub job_priority: u32,
    /// The lanes (docs/lanes.md): name → `{priority, spread, retry}`; the workers must have
    /// the same. Default: `transactional` and `bulk`.
    pub lanes: std::collections::BTreeMap<String, hedwig_queue::lane::Lane>,
    /// The lane of mail no rule classifies (and of the workers' jobs without a lane).
    pub default_lane: String,
    /// Sender domain (`example.com` or `*.example.com`) → lane, for mail whose header and app
    /// name no lane the host may use.
    pub sender_lanes: std::collections::BTreeMap<String, String>,
    /// How fast a host's count of recent messages per lane halves (fairness, docs/lanes.md).
    #[serde(with = "humantime_serde")]
    pub lane_fairness_half_life: Duration,
    /// beanstalkd time-to-run of new jobs; workers touch jobs that take longer.
    #[serde(with = "humantime_serde")]
    pub job_ttr: Duration,
    /// Time allowed to receive one request body.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once; more wait in the accept queue.
    pub max_concurrent_requests: usize,
    /// How long to wait for beanstalkd at start-up before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
    /// Longest wait for in-flight requests after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Address literals (`x@[192.0.2.1]`) accepted as sender or recipient domains: only in
    /// these networks (`allow: [cidr, ...]`); others get 400. Default: none.
    pub address_literals: hedwig_core::address::AddressLiterals,
    /// Time a client has to send a request's headers: from the connection's opening, or from
    /// the first byte of a later request on a kept-alive connection. Then it is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait, idle, for its next request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap, the oldest idle (then unauthenticated) connection
    /// is closed for a new one; with none, the new one is closed at once. Lowered at start to
    /// what the descriptor limit allows.
    pub max_connections: usize,
    /// Connections open at once from one client address (same rule at the cap). Behind a
    /// proxy or Docker's userland proxy every client has the proxy's address: raise it there.
    pub max_connections_per_ip: usize,
    /// Unsigned posts (old clients: the key in the body) read at once; more get 503 at once.
    /// Signed posts never wait for these.
    pub max_unauthenticated_requests: usize,
    /// Bytes of unsigned request bodies held at once; a body that does not fit gets 503.
    pub unauthenticated_bytes_in_flight: ByteSize,
    /// Bytes of all request bodies held at once; signed posts wait for room.
    pub max_bytes_in_flight: ByteSize,
    /// How far a signed request's `X-Hedwig-Date` may be from our clock; older ones are refused
    /// (401), and inside the window the message id is the nonce (see `duplicate_window`).
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// `POST /status` requests per minute per host (a token bucket as large), so that one
    /// host cannot keep the store and the status slots busy for the others; over it 429.
    /// 0: unlimited.
    pub status_rate_per_minute: u32,
    /// Serve HTTPS: `{cert_file, key_file}` (PEM). Reloaded when a file changes or on SIGHUP.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Where the post office keeps its files (the ledger's SQLite database by default).
    pub data_dir: PathBuf,
    /// The delivery ledger: its store, the writer, the admin API (docs/ledger.md).
    pub ledger: LedgerConfig,
    /// Put delivery ledger events (a `queued` event per message; `requeued`, `released`,
    /// `purged` from the admin commands) into the events tube (`<tube_prefix>-events`) of the
    /// server the job went to. `false`: none.
    pub events: bool,
    /// The suppression list: what the ledger writer adds, what intake takes out
    /// (docs/suppression.md).
    pub suppression: crate::suppression::SuppressionConfig,
    /// Signed webhooks: endpoints that get the ledger's events (docs/webhooks.md). Sent by
    /// the post office running the ledger writer.
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// The inbound SMTP listener for VERP bounce domains (late bounces and complaints,
    /// docs/bounces.md); none by default.
    pub bounce_listener: Option<crate::bounce::BounceListenerConfig>,
    /// One-click unsubscribe (RFC 8058): the secret of the tokens in the links workers add
    /// (their `unsubscribe:`); `GET`/`POST /unsubscribe/<token>` answer when it is set
    /// (docs/unsubscribe.md).
    pub unsubscribe: Option<crate::unsubscribe::UnsubscribeConfig>,
    /// The operator console: web pages on the admin listener (docs/console.md); off by
    /// default.
    pub console: crate::console::ConsoleConfig,
}

/// The `ledger:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The store: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DATABASE`. Default:
    /// `sqlite://<data_dir>/ledger.db`.
    pub url: Option<String>,
    /// How long records are kept; older ones are pruned in the background (by the writer).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// A message without a final outcome for every recipient this long after it was queued
    /// is stuck (the workers' `max_lifetime`, 5 days by default, plus a margin).
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// Run the ledger writer here (events tube -> store), with the pruner and the stuck
    /// check. With SQLite exactly one post office runs it; with PostgreSQL any number.
    pub writer: bool,
    /// How often the writer's post office counts stuck messages (and prunes, hourly at most).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Serve the admin API (`/api/v1/...`) on this address; never the intake port.
    pub api_listen: Option<SocketAddr>,
    /// A file holding the API's bearer token (or set `HEDWIG_LEDGER_API_TOKEN`).
    pub api_token_file: Option<PathBuf>,
    /// Keep the duplicate-id window in the store too, shared by every post office on it:
    /// `auto` (with PostgreSQL), `on`, `off`.
    pub shared_dedupe: SharedDedupe,
    /// Longest wait for the store per step of a claim; then this post office's own window
    /// answers alone (intake never waits for the ledger longer).
    #[serde(with = "humantime_serde")]
    pub shared_dedupe_timeout: Duration,
}

/// `ledger.shared_dedupe`: whether the duplicate-id window is kept in the store as well.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedDedupe {
    /// On when `ledger.url` is PostgreSQL (several post offices share it), off with SQLite.
    #[default]
    Auto,
    /// On with either store (with SQLite: the window survives a restart of the one post
    /// office, at the price of a write to the file per post).
    On,
    /// Each post office keeps its own window only.
    Off,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            url: None,
            retention: Duration::from_secs(30 * 86_400),
            stuck_after: Duration::from_secs(5 * 86_400 + 3600),
            writer: true,
            check_interval: Duration::from_secs(60),
            api_listen: None,
            api_token_file: None,
            shared_dedupe: SharedDedupe::Auto,
            shared_dedupe_timeout: Duration::from_millis(200),
        }
    }
}

/// Default of [`HostPolicy::rate_per_minute`]: recipients per minute per host.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 600;

/// What a sending host may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostPolicy {
    /// Sender domains this host may use (`example.com` also allows `sub.example.com` only when
    /// written `*.example.com`). Empty: any domain.
    pub allowed_sender_domains: Vec<String>,
    /// Recipients per minute (a post to n recipients counts n); 0 = unlimited.
    pub rate_per_minute: u32,
    /// Recipients allowed in a burst (the bucket's size; default: the per-minute rate). A
    /// post with more recipients is refused for good.
    pub rate_burst: Option<u32>,
    /// Refuse (401) posts that are not signed (`X-Hedwig-Signature`): set once the host's
    /// mailman signs, so that a captured key or post cannot be replayed unsigned.
    pub require_signed: bool,
    /// The host's lane, for mail no header, app or sender domain classifies. Default: the
    /// global `default_lane`.
    pub lane: Option<String>,
    /// The lanes a header, an app or a sender domain may put this host's mail in (the
    /// ceiling); empty: every lane.
    pub allowed_lanes: Vec<String>,
    /// Whether the host's messages may choose their lane with `X-Hedwig-Lane` (taken out of
    /// every message either way).
    pub lane_header: bool,
}

impl Default for HostPolicy {
    fn default() -> Self {
        HostPolicy {
            allowed_sender_domains: Vec::new(),
            rate_per_minute: DEFAULT_RATE_PER_MINUTE,
            rate_burst: None,
            require_signed: false,
            lane: None,
            allowed_lanes: Vec::new(),
            lane_header: false,
        }
    }
}

impl HostPolicy {
    /// The bucket's size: `rate_burst`, or the per-minute rate; at least 1.
    pub fn burst(&self) -> u32 {
        self.rate_burst.unwrap_or(self.rate_per_minute).max(1)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8025)),
            beanstalkd: vec!["127.0.0.1:11300".into()],
            tube_prefix: hedwig_queue::tubes::DEFAULT_PREFIX.into(),
            tube: None,
            pool_size: 32,
            secret: None,
            secret_file: None,
            require_safe_keys: false,
            previous_secrets: Vec::new(),
            max_message_size: ByteSize(25_000_000),
            revoked: Vec::new(),
            default_policy: HostPolicy::default(),
            hosts: HashMap::new(),
            duplicate_window: Duration::from_secs(24 * 3600),
            duplicate_capacity: 1_000_000,
            job_priority: 1024,
            lanes: hedwig_queue::lane::default_lanes(),
            default_lane: hedwig_queue::lane::default_lane(),
            sender_lanes: Default::default(),
            lane_fairness_half_life: Duration::from_secs(60),
            job_ttr: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            max_concurrent_requests: 1024,
            startup_wait: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            address_literals: Default::default(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 1024,
            max_unauthenticated_requests: 32,
            unauthenticated_bytes_in_flight: ByteSize(128 * 1024 * 1024),
            max_bytes_in_flight: ByteSize(512 * 1024 * 1024),
            replay_window: Duration::from_secs(300),
            status_rate_per_minute: 60,
            tls: None,
            data_dir: PathBuf::from("/var/lib/hedwig/postoffice"),
            ledger: LedgerConfig::default(),
            events: true,
            suppression: Default::default(),
            webhooks: Vec::new(),
            bounce_listener: None,
            unsubscribe: None,
            console: Default::default(),
        }
    }
}

/// Bytes a job needs beyond the message: the envelope line (queue id, host, up to a few hundred
/// recipients of up to 256 octets each).
pub const JOB_OVERHEAD: u64 = 128 * 1024;

/// The checked secrets: current first, then previous ones.
#[derive(Debug, Clone)]
pub struct Secrets(pub Vec<String>);

/// A checked configuration, ready to serve: the [`Config`] with its host names normalised
/// (lowercase A-labels, as a post's `fqdn` is compared), the secrets read, the beanstalkd
/// servers checked, the tube names made.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub secrets: Secrets,
    /// `beanstalkd`, in configured order, each a checked `host:port`.
    pub servers: Vec<String>,
    /// The tube names, from `tube_prefix` (or the old `tube`).
    pub tubes: Tubes,
    /// The ledger's checked settings.
    pub ledger: crate::ledger::LedgerSettings,
    /// The bounce listener's checked settings, when there is one.
    pub bounce: Option<crate::bounce::BounceSettings>,
    /// The one-click unsubscribe key, when `unsubscribe:` is set.
    pub unsubscribe: Option<hedwig_core::unsubscribe::UnsubscribeKey>,
}

/// Room for the raw form's header line ([`hedwig_core::wire::RawHeader`]) in a raw body.
pub const RAW_HEADER_ALLOWANCE: usize = 1024 * 1024;

impl Config {
    /// Checks what can be checked without the network and parses it once; every problem, one
    /// per entry, naming its key.
    pub fn check(&self) -> Result<Settings, Vec<String>> {
        let mut problems = Vec::new();
        let mut config = self.clone();
        let mut secrets = Vec::new();
        if let Some(path) = &self.secret_file {
            if let Err(e) = hedwig_core::keyfile::check("secret file", path, self.require_safe_keys)
            {
                problems.push(format!("secret_file: {e}"));
            }
        }
        match read_secret(self.secret.as_deref(), self.secret_file.as_deref()) {
            Ok(Some(s)) => match hedwig_core::key::check_secret(&s) {
                Ok(s) => secrets.push(s.to_string()),
                Err(e) => problems.push(format!("secret: {e}")),
            },
            Ok(None) => problems.push(
                "secret: not set (set `secret_file`, `secret`, or HEDWIG_SECRET_FILE; `keygen secret` makes one)"
                    .into(),
            ),
            Err(e) => problems.push(format!("secret_file: {e}")),
        }
        for (i, s) in self.previous_secrets.iter().enumerate() {
            match hedwig_core::key::check_secret(s) {
                Ok(s) => secrets.push(s.to_string()),
                Err(e) => problems.push(format!("previous_secrets[{i}]: {e}")),
            }
        }
        config.revoked.clear();
        for host in &self.revoked {
            match hedwig_core::key::normalize_fqdn(host) {
                Ok(host) => config.revoked.push(host),
                Err(e) => problems.push(format!("revoked: {e}")),
            }
        }
        config.hosts.clear();
        for (host, policy) in &self.hosts {
            match hedwig_core::key::normalize_fqdn(host) {
                Ok(fqdn) => {
                    if config.hosts.insert(fqdn.clone(), policy.clone()).is_some() {
                        problems.push(format!("hosts.{host}: another entry is for {fqdn} too"));
                    }
                }
                Err(e) => problems.push(format!("hosts.{host}: {e}")),
            }
        }
        problems.extend(self.check_lanes());
        let tubes = self.tubes().map_err(|e| problems.push(e)).ok();
        if self.max_message_size.0 == 0 {
            problems.push("max_message_size: must be more than 0".into());
        }
        let servers = self.beanstalkd.clone();
        if servers.is_empty() {
            problems.push("beanstalkd: no server given".into());
        }
        for addr in &servers {
            if let Err(e) = hedwig_core::config::check_host_port(addr) {
                problems.push(format!("beanstalkd: {e}"));
            }
        }
        if self.pool_size == 0 || self.max_concurrent_requests == 0 {
            problems.push("pool_size and max_concurrent_requests must be at least 1".into());
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_unauthenticated_requests == 0
        {
            problems.push(
                "max_connections, max_connections_per_ip and max_unauthenticated_requests must be at least 1"
                    .into(),
            );
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            problems.push("header_timeout and idle_timeout must be more than 0".into());
        }
        let body_limit = self.body_limit() as u64;
        for (name, value) in [
            ("max_bytes_in_flight", self.max_bytes_in_flight.0),
            (
                "unauthenticated_bytes_in_flight",
                self.unauthenticated_bytes_in_flight.0,
            ),
        ] {
            if value < body_limit {
                problems.push(format!(
                    "{name}: {value} bytes cannot hold one body of the largest message \
                     ({body_limit} bytes: max_message_size with room for its encoding)"
                ));
            }
        }
        if self.replay_window.is_zero() || self.replay_window > self.duplicate_window {
            problems.push(format!(
                "replay_window ({}) must be more than 0 and at most duplicate_window ({}): \
                 inside the window a replay is recognised by its message id",
                humantime::format_duration(self.replay_window),
                humantime::format_duration(self.duplicate_window)
            ));
        }
        if let Some(tls) = &self.tls {
            if let Err(e) = crate::tls::load(tls) {
                problems.push(format!("tls: {e}"));
            }
        }
        let ledger = crate::ledger::LedgerSettings::check(self)
            .map_err(|e| problems.extend(e))
            .ok();
        let bounce = match &self.bounce_listener {
            Some(b) => {
                if !self.events {
                    problems.push(
                        "bounce_listener: needs events: true (it records what it reads as ledger events)"
                            .into(),
                    );
                }
                b.check(self.require_safe_keys)
                    .map_err(|e| problems.extend(e))
                    .ok()
            }
            None => None,
        };
        let unsubscribe = match &self.unsubscribe {
            Some(u) => {
                if !self.events {
                    problems.push(
                        "unsubscribe: needs events: true (an unsubscribe is recorded as a ledger event)"
                            .into(),
                    );
                }
                u.check(self.require_safe_keys)
                    .map_err(|e| problems.push(e))
                    .ok()
            }
            None => None,
        };
        match (tubes, ledger) {
            (Some(tubes), Some(ledger)) if problems.is_empty() => Ok(Settings {
                config,
                secrets: Secrets(secrets),
                servers,
                tubes,
                ledger,
                bounce,
                unsubscribe,
            }),
            _ => Err(problems),
        }
    }

    /// The problems of the lane settings: the lanes, `sender_lanes`, the policies' lanes.
    fn check_lanes(&self) -> Vec<String> {
        let mut problems = hedwig_queue::lane::check(&self.lanes, &self.default_lane);
        if self.lane_fairness_half_life.is_zero() {
            problems.push("lane_fairness_half_life: must be more than 0s".into());
        }
        let known = |lane: &String| self.lanes.contains_key(lane);
        for (domain, lane) in &self.sender_lanes {
            if !known(lane) {
                problems.push(format!(
                    "sender_lanes.{domain}: {lane:?} is not a defined lane"
                ));
            }
        }
        let policies = std::iter::once(("default_policy".to_string(), &self.default_policy))
            .chain(self.hosts.iter().map(|(h, p)| (format!("hosts.{h}"), p)));
        for (key, policy) in policies {
            for lane in &policy.allowed_lanes {
                if !known(lane) {
                    problems.push(format!(
                        "{key}.allowed_lanes: {lane:?} is not a defined lane"
                    ));
                }
            }
            let own = policy.lane.as_ref().unwrap_or(&self.default_lane);
            if policy.lane.as_ref().is_some_and(|l| !known(l)) {
                problems.push(format!("{key}.lane: {own:?} is not a defined lane"));
            } else if !policy.allowed_lanes.is_empty() && !policy.allowed_lanes.contains(own) {
                problems.push(format!(
                    "{key}: its lane {own:?} is not in its allowed_lanes (set `lane` to one of them)"
                ));
            }
        }
        problems
    }

    /// Largest HTTP body: the message limit, with room for form and JSON escaping (form
    /// encoding of JSON-escaped text can triple a message: a CRLF becomes `%5Cr%5Cn`).
    pub fn body_limit(&self) -> usize {
        self.max_message_size
            .as_usize()
            .saturating_mul(3)
            .saturating_add(64 * 1024)
    }

    /// Largest body of the raw form (`POST /raw`): the message as it is, after a header line
    /// of at most [`RAW_HEADER_ALLOWANCE`] (1,000 recipients of 254 octets, JSON-quoted, fit).
    /// Never more than [`Config::body_limit`].
    pub fn raw_body_limit(&self) -> usize {
        self.max_message_size
            .as_usize()
            .saturating_add(RAW_HEADER_ALLOWANCE)
            .min(self.body_limit())
    }

    /// The tube names, from `tube_prefix` (or the old `tube`); the error names the key.
    pub fn tubes(&self) -> Result<Tubes, String> {
        let (key, prefix) = match &self.tube {
            Some(old) if self.tube_prefix != DEFAULT_PREFIX && self.tube_prefix != *old => {
                return Err(format!(
                    "tube ({old:?}) and tube_prefix ({:?}) disagree: tube is the old name of \
                     tube_prefix; keep only tube_prefix",
                    self.tube_prefix
                ))
            }
            Some(old) => ("tube", old),
            None => ("tube_prefix", &self.tube_prefix),
        };
        Tubes::new(prefix).map_err(|e| format!("{key}: {e}"))
    }

    /// Warnings about old keys in use (renamed keys that are still read).
    pub fn renamed_keys(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(old) = &self.tube {
            warnings.push(format!(
                "config key `tube` is renamed `tube_prefix`; `tube: {old}` is read as \
                 `tube_prefix: {old}` (tubes {old}, {old}-failed, {old}-held, {old}-holds): \
                 rename it, and give the workers the same tube_prefix"
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: Option<&str>, env: &[(&str, &str)]) -> Config {
        let file = yaml.map(|y| {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), y).unwrap();
            f
        });
        hedwig_core::config::load_from_env(file.as_ref().map(|f| f.path()), env.iter().copied())
            .unwrap()
    }

    #[test]
    fn beanstalkd_accepts_a_string_a_comma_list_and_a_yaml_list() {
        assert_eq!(load(None, &[]).beanstalkd, ["127.0.0.1:11300"]);
        let c = load(None, &[("HEDWIG_BEANSTALKD", "a:11300, b:11301")]);
        assert_eq!(c.beanstalkd, ["a:11300", "b:11301"]);
        let c = load(Some("beanstalkd: q:1\n"), &[]);
        assert_eq!(c.beanstalkd, ["q:1"]);
        // the old form: one string with commas, in the file
        let c = load(Some("beanstalkd: \"a:1, b:2,\"\n"), &[]);
        assert_eq!(c.beanstalkd, ["a:1", "b:2"]);
        let c = load(Some("beanstalkd:\n  - a:1\n  - b:2\n"), &[]);
        assert_eq!(c.beanstalkd, ["a:1", "b:2"]);
    }

    #[test]
    fn allowed_sender_domains_from_the_environment() {
        let var = "HEDWIG_DEFAULT_POLICY__ALLOWED_SENDER_DOMAINS";
        let c = load(None, &[(var, r#"[example.org, "*.example.org"]"#)]);
        assert_eq!(
            c.default_policy.allowed_sender_domains,
            ["example.org", "*.example.org"]
        );
        let c = load(None, &[(var, "[]")]);
        assert!(c.default_policy.allowed_sender_domains.is_empty());
    }

    #[test]
    fn tube_prefix_and_the_old_tube_key() {
        assert_eq!(load(None, &[]).tubes().unwrap(), Tubes::default());
        let c = load(Some("tube_prefix: acme\n"), &[]);
        assert_eq!(c.tubes().unwrap().failed(), "acme-failed");
        assert!(c.renamed_keys().is_empty());
        // The old key sets the prefix, with a warning.
        let c = load(Some("tube: old\n"), &[]);
        assert_eq!(c.tubes().unwrap().outbound(), "old");
        assert_eq!(c.tubes().unwrap().held(), "old-held");
        assert!(
            c.renamed_keys()[0].contains("tube_prefix"),
            "{:?}",
            c.renamed_keys()
        );
        let c = load(Some("tube: same\ntube_prefix: same\n"), &[]);
        assert_eq!(c.tubes().unwrap().outbound(), "same");
        let c = load(Some("tube: a\ntube_prefix: b\n"), &[]);
        assert!(c.tubes().unwrap_err().contains("disagree"));
        let c = load(Some("tube_prefix: \"a b\"\n"), &[]);
        assert!(c.tubes().unwrap_err().starts_with("tube_prefix: "));
        let c = load(Some("tube: \"-x\"\n"), &[]);
        assert!(c.tubes().unwrap_err().starts_with("tube: "));
    }

    /// A `lanes:` block in the file is merged key by key into the default lanes: a lane of
    /// its own is added, a default lane's keys given replace only those (docs/lanes.md).
    #[test]
    fn lanes_in_the_file_merge_with_the_defaults() {
        let c = load(
            Some(
                "lanes:\n  transactional:\n    retry: {max_lifetime: 2h}\n  digest:\n    priority: 5000\n",
            ),
            &[],
        );
        let t = &c.lanes["transactional"];
        assert_eq!(t.priority, Some(0));
        assert_eq!(t.retry.max_lifetime, Some(Duration::from_secs(7200)));
        assert_eq!(t.retry.first, Some(Duration::from_secs(30)));
        assert_eq!(c.lanes["digest"].priority, Some(5000));
        assert_eq!(c.lanes["bulk"].spread, 100_000);
        let c = load(None, &[("HEDWIG_LANES__BULK__SPREAD", "0")]);
        assert_eq!(c.lanes["bulk"].spread, 0);
        assert_eq!(c.lanes["transactional"].spread, 1000);
    }

    #[test]
    fn bad_server_addresses_are_reported() {
        let c = Config {
            beanstalkd: vec!["nohost".into(), "ok:1".into()],
            secret: Some("x".repeat(40)),
            ..Config::default()
        };
        let problems = c.check().unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("nohost")),
            "{problems:?}"
        );
        assert!(!problems.iter().any(|p| p.contains("ok:1")), "{problems:?}");
    }

    #[test]
    fn check_normalises_host_names_and_parses_servers_once() {
        let c = Config {
            beanstalkd: vec!["a:1".into(), "b:2".into()],
            secret: Some("x".repeat(40)),
            revoked: vec!["Old.Example.".into()],
            hosts: [("Web1.Example".to_string(), HostPolicy::default())].into(),
            ..Config::default()
        };
        let s = c.check().unwrap();
        assert_eq!(s.servers, ["a:1", "b:2"]);
        assert_eq!(s.config.revoked, ["old.example"]);
        assert!(s.config.hosts.contains_key("web1.example"));
        let bad = Config {
            hosts: [
                ("bad host".to_string(), HostPolicy::default()),
                ("web1.example".to_string(), HostPolicy::default()),
                ("WEB1.example".to_string(), HostPolicy::default()),
            ]
            .into(),
            ..c
        };
        let problems = bad.check().unwrap_err().join("\n");
        assert!(problems.contains("hosts.bad host"), "{problems}");
        assert!(
            problems.contains("another entry is for web1.example"),
            "{problems}"
        );
    }
}
