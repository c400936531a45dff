//! Who sent it: a client's address on a Docker network mapped to its container (issue 17).
//!
//! With `docker.socket` set, mailman asks the Docker Engine API (through `bollard`, on the
//! unix socket) for the containers and networks, and keeps a map from each container's address
//! on each network (docker0 and user-defined compose networks) to its identity: name, image,
//! compose project and service, and the `hedwig.*` labels that set its policy
//! ([`LabelPolicy`]). The map is filled at start, refreshed on Docker events (container
//! start/die/destroy, network connect/disconnect) and every `refresh_interval` as a safety net.
//!
//! A lookup never waits on the API for longer than `lookup_timeout`: an address in the map is
//! answered at once; an address on a Docker network but not (yet) in the map — a container that
//! started a moment ago — asks for a refresh and waits for it at most that long; anything else
//! (loopback, another network, no socket) is not a container, and the session's identity stays
//! the client address, as without this module. An address still unknown after a refresh is
//! remembered as such for [`MISS_TTL`], so a non-container on a Docker network (the host via a
//! gateway address) does not cost a refresh per connection.
//!
//! Not here: enforcing the policy (the SMTP session, [`crate::smtp::app_policy`]); carrying the
//! identity to the post office (the spool and the post).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions, ListNetworksOptions};
use bollard::Docker;
use futures_util::StreamExt;
use hedwig_core::wire::{App, AppSource};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an address found on a Docker network but not in the map stays "not a container"
/// before a connection from it asks for a refresh again.
pub const MISS_TTL: Duration = Duration::from_secs(10);

/// Most remembered misses; past it the list starts over.
const MAX_MISSES: usize = 1024;

/// Label: comma-separated domains the container may send as (MAIL FROM and `From:`).
pub const LABEL_SENDER_DOMAINS: &str = "hedwig.sender-domains";
/// Label: messages per minute.
pub const LABEL_RATE: &str = "hedwig.rate";
/// Label: the lane the container asks for.
pub const LABEL_LANE: &str = "hedwig.lane";
const LABEL_PROJECT: &str = "com.docker.compose.project";
const LABEL_SERVICE: &str = "com.docker.compose.service";

/// The `docker:` settings.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The Engine API's unix socket.
    pub socket: std::path::PathBuf,
    /// Longest wait of a session for a refresh when its address is on a Docker network but
    /// not known yet.
    pub lookup_timeout: Duration,
    /// Full refresh at least this often, whatever the events say.
    pub refresh_interval: Duration,
    /// Most addresses kept.
    pub max_entries: usize,
}

/// What a container's `hedwig.*` labels ask of its mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelPolicy {
    /// `hedwig.sender-domains`: `example.com` (exactly) or `*.example.com` (it and its
    /// subdomains), lowercase; `None` when the label is not set (any domain, as far as
    /// mailman is concerned; the post office's host policy still applies).
    pub sender_domains: Option<Vec<String>>,
    /// `hedwig.rate`: messages per minute; `None` when not set or `0` (no limit).
    pub rate: Option<u32>,
    /// A label that cannot be read, as `label="value"`: the container's mail is refused until
    /// it is fixed (failing open would drop the limit its owner asked for).
    pub bad_label: Option<String>,
}

impl LabelPolicy {
    /// Reads the policy labels.
    pub fn from_labels(labels: &HashMap<String, String>) -> LabelPolicy {
        let mut policy = LabelPolicy::default();
        if let Some(value) = labels.get(LABEL_SENDER_DOMAINS) {
            let domains: Vec<String> = value
                .split(',')
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect();
            let bad = domains.iter().find(|d| {
                let name = d.strip_prefix("*.").unwrap_or(d);
                name.contains('*')
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            });
            match bad {
                Some(_) => policy.bad_label = Some(format!("{LABEL_SENDER_DOMAINS}={value:?}")),
                // An empty list allows nothing, which is what it says.
                None => policy.sender_domains = Some(domains),
            }
        }
        if let Some(value) = labels.get(LABEL_RATE) {
            match value.trim().parse::<u32>() {
                // 0 is no limit, as the post office's `rate_per_minute: 0`.
                Ok(0) => {}
                Ok(rate) => policy.rate = Some(rate),
                Err(_) => {
                    policy
                        .bad_label
                        .get_or_insert(format!("{LABEL_RATE}={value:?}"));
                }
            }
        }
        policy
    }
}

/// One container as a session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The container's id (rate limits follow it, not the name).
    pub id: String,
    /// What goes with its mail.
    pub app: App,
    /// What its labels ask.
    pub policy: LabelPolicy,
}

impl Identity {
    /// The identity of a container from its name (with or without the API's leading `/`),
    /// image and labels.
    pub fn new(
        id: &str,
        name: &str,
        image: Option<&str>,
        labels: &HashMap<String, String>,
    ) -> Self {
        let label = |key: &str| {
            labels
                .get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Identity {
            id: id.to_string(),
            app: App {
                name: name.trim_start_matches('/').to_string(),
                source: AppSource::Container,
                image: image.map(str::to_string).filter(|i| !i.is_empty()),
                compose_project: label(LABEL_PROJECT),
                compose_service: label(LABEL_SERVICE),
                lane: label(LABEL_LANE),
            },
            policy: LabelPolicy::from_labels(labels),
        }
    }
}

/// The map at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    by_ip: HashMap<IpAddr, Arc<Identity>>,
    /// The subnets of the Docker networks: only addresses in them can be containers.
    subnets: Vec<IpNet>,
}

/// Counters the resolver keeps (registered in [`crate::metrics::Metrics`]).
#[derive(Clone, Default)]
pub struct DockerMetrics {
    /// Addresses in the map now.
    pub entries: Gauge,
    /// Failed Engine API calls (listing or the event stream).
    pub api_errors: Counter,
    /// Full refreshes done.
    pub refreshes: Counter,
}

/// The address-to-container map and the tasks that keep it current.
pub struct Resolver {
    docker: Mutex<Docker>,
    negotiated: AtomicBool,
    settings: DockerSettings,
    snapshot: RwLock<Snapshot>,
    /// Asks the refresh task for a refresh (events, misses); permits coalesce.
    wake: Notify,
    /// Number of the last refresh started and (in the channel) finished.
    started: AtomicU64,
    finished: watch::Sender<u64>,
    misses: Mutex<HashMap<IpAddr, Instant>>,
    rates: Mutex<HashMap<String, Bucket>>,
    metrics: DockerMetrics,
}

/// Why the Docker API cannot be used at all.
#[derive(Debug, thiserror::Error)]
#[error("docker socket {path}: {source}")]
pub struct ConnectError {
    path: String,
    #[source]
    source: bollard::errors::Error,
}

impl Resolver {
    /// Connects to `settings.socket`, runs the first refresh (waiting for it at most
    /// `lookup_timeout`), and starts the refresh and event tasks until `stop`. Fails only on
    /// an unusable socket path; a daemon that does not answer shows as refresh failures.
    pub async fn start(
        settings: DockerSettings,
        metrics: DockerMetrics,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, ConnectError> {
        let path = settings.socket.display().to_string();
        // bollard's timeout is per request, in seconds; refreshes get a shorter one of ours.
        let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|source| ConnectError { path, source })?;
        let this = Arc::new(Resolver {
            docker: Mutex::new(docker),
            negotiated: AtomicBool::new(false),
            settings,
            snapshot: RwLock::new(Snapshot::default()),
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::channel(0).0,
            misses: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            metrics,
        });
        let mut finished = this.finished.subscribe();
        tokio::spawn(this.clone().refresh_loop(stop.clone()));
        tokio::spawn(this.clone().event_loop(stop));
        let _ = tokio::time::timeout(this.settings.lookup_timeout, finished.changed()).await;
        Ok(this)
    }

    /// The client, speaking the engine's API version once it is known: an engine older than
    /// bollard's version refuses its requests (Docker 20.10 speaks API 1.41).
    async fn docker(&self) -> Result<Docker, bollard::errors::Error> {
        let docker = match self.docker.lock() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if self.negotiated.load(Ordering::SeqCst) {
            return Ok(docker);
        }
        let docker = docker.negotiate_version().await?;
        if let Ok(mut slot) = self.docker.lock() {
            *slot = docker.clone();
        }
        self.negotiated.store(true, Ordering::SeqCst);
        Ok(docker)
    }

    /// The container at `ip`, if it is one. Waits at most `lookup_timeout`.
    pub async fn lookup(&self, ip: IpAddr) -> Option<Arc<Identity>> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        {
            let snap = self.snapshot.read().ok()?;
            if let Some(found) = snap.by_ip.get(&ip) {
                return Some(found.clone());
            }
            if !snap.subnets.iter().any(|net| net.contains(&ip)) {
                return None;
            }
        }
        let now = Instant::now();
        if let Ok(misses) = self.misses.lock() {
            if misses.get(&ip).is_some_and(|at| now < *at + MISS_TTL) {
                return None;
            }
        }
        // A refresh that starts after this point sees the container if there is one.
        let mut finished = self.finished.subscribe();
        let want = self.started.load(Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let _ = tokio::time::timeout(
            self.settings.lookup_timeout,
            finished.wait_for(|done| *done >= want),
        )
        .await;
        let found = self.snapshot.read().ok()?.by_ip.get(&ip).cloned();
        if found.is_none() {
            if let Ok(mut misses) = self.misses.lock() {
                if misses.len() >= MAX_MISSES {
                    misses.clear();
                }
                misses.insert(ip, now);
            }
        }
        found
    }

    /// Takes one message from the container's `hedwig.rate` allowance; `false` when it is
    /// used up for now.
    pub fn take_message(&self, identity: &Identity, now: Instant) -> bool {
        let Some(per_minute) = identity.policy.rate else {
            return true;
        };
        let Ok(mut rates) = self.rates.lock() else {
            return true;
        };
        if rates.len() >= self.settings.max_entries.max(1) && !rates.contains_key(&identity.id) {
            // Only containers that are gone pile up here (refresh prunes them); start over.
            rates.clear();
        }
        rates
            .entry(identity.id.clone())
            .or_insert_with(|| Bucket::full(per_minute, now))
            .take(per_minute, now)
    }

    /// Addresses in the map now.
    pub fn len(&self) -> usize {
        self.snapshot.read().map(|s| s.by_ip.len()).unwrap_or(0)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn refresh_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let timeout = self
                .settings
                .refresh_interval
                .clamp(Duration::from_secs(1), Duration::from_secs(30));
            match tokio::time::timeout(timeout, self.refresh()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    self.metrics.api_errors.inc();
                    tracing::warn!(%err, "docker: refresh of the container map failed; keeping the last one");
                }
                Err(_) => {
                    self.metrics.api_errors.inc();
                    tracing::warn!(
                        ?timeout,
                        "docker: refresh of the container map timed out; keeping the last one"
                    );
                }
            }
            self.finished.send_replace(number);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.refresh_interval) => {}
            }
        }
    }

    /// Lists networks and containers and replaces the map.
    async fn refresh(&self) -> Result<(), bollard::errors::Error> {
        let docker = self.docker().await?;
        let networks = docker.list_networks(None::<ListNetworksOptions>).await?;
        let subnets: Vec<IpNet> = networks
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| c.subnet.as_deref()?.parse().ok())
            .collect();
        let containers = docker
            .list_containers(None::<ListContainersOptions>)
            .await?;
        let mut by_ip = HashMap::new();
        let mut dropped = 0usize;
        for c in &containers {
            let (Some(id), Some(name)) =
                (c.id.as_deref(), c.names.as_ref().and_then(|n| n.first()))
            else {
                continue;
            };
            let identity = Arc::new(Identity::new(
                id,
                name,
                c.image.as_deref(),
                c.labels.as_ref().unwrap_or(&HashMap::new()),
            ));
            let endpoints = c
                .network_settings
                .as_ref()
                .and_then(|s| s.networks.as_ref())
                .into_iter()
                .flat_map(|n| n.values());
            for endpoint in endpoints {
                for ip in [&endpoint.ip_address, &endpoint.global_ipv6_address]
                    .into_iter()
                    .flatten()
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                {
                    if by_ip.len() >= self.settings.max_entries {
                        dropped += 1;
                        continue;
                    }
                    by_ip.insert(ip, identity.clone());
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                max_entries = self.settings.max_entries,
                "docker: more container addresses than docker.max_entries; the rest are known by address"
            );
        }
        let ids: std::collections::HashSet<&str> =
            containers.iter().filter_map(|c| c.id.as_deref()).collect();
        if let Ok(mut rates) = self.rates.lock() {
            rates.retain(|id, _| ids.contains(id.as_str()));
        }
        if let Ok(mut misses) = self.misses.lock() {
            misses.retain(|ip, _| !by_ip.contains_key(ip));
        }
        self.metrics
            .entries
            .set(i64::try_from(by_ip.len()).unwrap_or(i64::MAX));
        self.metrics.refreshes.inc();
        if let Ok(mut snap) = self.snapshot.write() {
            *snap = Snapshot { by_ip, subnets };
        }
        Ok(())
    }

    /// Follows the event stream, asking for a refresh on each event that can change an
    /// address; reconnects (with a refresh: events may have been missed) after a failure.
    async fn event_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let filters = HashMap::from([
                (
                    "type".to_string(),
                    vec!["container".to_string(), "network".to_string()],
                ),
                (
                    "event".to_string(),
                    ["start", "die", "destroy", "rename", "connect", "disconnect"]
                        .map(String::from)
                        .to_vec(),
                ),
            ]);
            let docker = match self.docker().await {
                Ok(docker) => docker,
                Err(err) => {
                    tracing::debug!(%err, "docker: no API version yet for the event stream");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            let mut events = docker.events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            let failure = loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    next = events.next() => match next {
                        Some(Ok(_)) => {
                            backoff = Duration::from_secs(1);
                            self.wake.notify_one();
                        }
                        Some(Err(err)) => break err.to_string(),
                        None => break "the event stream ended".to_string(),
                    }
                }
            };
            self.metrics.api_errors.inc();
            tracing::warn!(why = %failure, retry_in = ?backoff, "docker: lost the event stream; reconnecting");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
            self.wake.notify_one();
        }
    }
}

/// A token bucket of one minute's worth of messages, refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        let capacity = f64::from(per_minute);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn identity_from_compose_labels() {
        let id = Identity::new(
            "abc",
            "/shop-billing-1",
            Some("shop/billing:4"),
            &labels(&[
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.service", "billing"),
                ("hedwig.lane", " transactional "),
                ("hedwig.sender-domains", "Shop.Example, *.mail.example."),
                ("hedwig.rate", "30"),
            ]),
        );
        assert_eq!(id.app.name, "shop-billing-1");
        assert_eq!(id.app.source, AppSource::Container);
        assert_eq!(id.app.image.as_deref(), Some("shop/billing:4"));
        assert_eq!(id.app.compose_project.as_deref(), Some("shop"));
        assert_eq!(id.app.compose_service.as_deref(), Some("billing"));
        assert_eq!(id.app.lane.as_deref(), Some("transactional"));
        assert_eq!(
            id.policy.sender_domains,
            Some(vec![
                "shop.example".to_string(),
                "*.mail.example".to_string()
            ])
        );
        assert_eq!(id.policy.rate, Some(30));
        assert_eq!(id.policy.bad_label, None);
    }

    #[test]
    fn no_labels_no_policy() {
        let id = Identity::new("abc", "web", None, &HashMap::new());
        assert_eq!(id.policy, LabelPolicy::default());
        assert_eq!(
            (id.app.compose_project, id.app.lane, id.app.image),
            (None, None, None)
        );
    }

    #[test]
    fn unreadable_labels_are_named() {
        let p = LabelPolicy::from_labels(&labels(&[("hedwig.rate", "0")]));
        assert_eq!(p, LabelPolicy::default(), "0 is no limit");
        let p = LabelPolicy::from_labels(&labels(&[("hedwig.rate", "fast")]));
        assert_eq!(p.bad_label.as_deref(), Some("hedwig.rate=\"fast\""));
        let p = LabelPolicy::from_labels(&labels(&[("hedwig.sender-domains", "a.test, b c.test")]));
        assert!(p
            .bad_label
            .is_some_and(|b| b.starts_with("hedwig.sender-domains")));
        // an empty list is a list: nothing is allowed
        let p = LabelPolicy::from_labels(&labels(&[("hedwig.sender-domains", " , ")]));
        assert_eq!(p.sender_domains, Some(vec![]));
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DockerSettings {
            socket: dir.path().join("docker.sock"),
            lookup_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
            max_entries: 10,
        };
        let result =
            Resolver::start(settings, DockerMetrics::default(), CancellationToken::new()).await;
        let err = result.err().expect("no socket, no resolver").to_string();
        assert!(err.contains("docker.sock"), "{err}");
    }

    #[test]
    fn bucket_gives_a_minute_then_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        assert!((0..3).all(|_| b.take(3, t0)));
        assert!(!b.take(3, t0));
        // 3 per minute: one more every 20 s
        assert!(!b.take(3, t0 + Duration::from_secs(19)));
        assert!(b.take(3, t0 + Duration::from_secs(20)));
        assert!(!b.take(3, t0 + Duration::from_secs(20)));
        // never more than a minute's worth saved up
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.take(3, later)));
        assert!(!b.take(3, later));
        let mut zero = Bucket::full(0, t0);
        assert!(!zero.take(0, t0 + Duration::from_secs(3600)));
    }
}
