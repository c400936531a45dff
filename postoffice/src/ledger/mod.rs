//! The delivery ledger inside the post office (docs/ledger.md): the checked `ledger:`
//! settings, the background work of a post office with `ledger.writer: true` (the writer,
//! the pruner, the stuck check), the metrics, and a store handle that opens late.
//!
//! Layout: [`api`] (the admin HTTP API on its own listener), [`cli`] (`postoffice trace`,
//! `postoffice stuck`), [`claims`] (the duplicate-id window shared through the store).
//!
//! Not here: the store and the writer themselves (`hedwig-ledger`), emitting events (intake).

pub mod api;
pub mod claims;
pub mod cli;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hedwig_ledger::writer::{WriterConfig, WriterStats};
use hedwig_ledger::{Store, StoreError};
use hedwig_queue::Tubes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SharedDedupe};

/// The environment variable holding the API token (wins over `ledger.api_token_file`).
pub const TOKEN_ENV: &str = "HEDWIG_LEDGER_API_TOKEN";

/// Shortest API token accepted.
const MIN_TOKEN: usize = 16;

/// Longest `ledger.shared_dedupe_timeout`.
const MAX_SHARED_TIMEOUT: Duration = Duration::from_secs(5);

/// The `ledger:` section, checked.
#[derive(Clone)]
pub struct LedgerSettings {
    /// The store URL (the default filled in from `data_dir`).
    pub url: String,
    pub retention: Duration,
    pub stuck_after: Duration,
    pub writer: bool,
    pub check_interval: Duration,
    pub api_listen: Option<SocketAddr>,
    /// The API's bearer token (required when `api_listen` is set).
    pub token: Option<String>,
    /// Claims go to the store as well as the in-process window (`shared_dedupe`, resolved).
    pub shared_dedupe: bool,
    pub shared_dedupe_timeout: Duration,
    /// The `suppression:` section (the writer's policy, intake's set).
    pub suppression: crate::suppression::SuppressionSettings,
    /// `ledger.url` was given (not the default in `data_dir`).
    pub url_set: bool,
    /// Webhook endpoints (`webhooks:`): the writer fills their outbox, and the post office
    /// running it sends it.
    pub webhooks: Vec<crate::webhooks::Endpoint>,
    /// This post office's name in the outbox's leases.
    pub webhook_owner: String,
    /// The operator console (`console:`), served on `api_listen`; `None`: off.
    pub console: Option<crate::console::ConsoleSettings>,
}

impl std::fmt::Debug for LedgerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSettings")
            .field("url", &redact(&self.url))
            .field("writer", &self.writer)
            .field("api_listen", &self.api_listen)
            .field("shared_dedupe", &self.shared_dedupe)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl LedgerSettings {
    /// Checks the section; every problem names its key.
    pub fn check(config: &Config) -> Result<LedgerSettings, Vec<String>> {
        let l = &config.ledger;
        let mut problems = Vec::new();
        let url = l
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("ledger.db").display()));
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "ledger.url: {:?} is neither sqlite://PATH nor postgres://...",
                redact(&url)
            ));
        }
        if l.retention < Duration::from_secs(3600) {
            problems.push("ledger.retention: must be at least 1h".into());
        }
        if l.stuck_after.is_zero() {
            problems.push("ledger.stuck_after: must be more than 0".into());
        }
        if l.check_interval.is_zero() {
            problems.push("ledger.check_interval: must be more than 0".into());
        }
        let token = match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
            _ => match &l.api_token_file {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(token) => Some(token.trim().to_owned()),
                    Err(e) => {
                        problems.push(format!("ledger.api_token_file: {}: {e}", path.display()));
                        None
                    }
                },
                None => None,
            },
        };
        if l.api_listen.is_some() {
            match &token {
                None if problems.is_empty() => problems.push(format!(
                    "ledger.api_listen is set but no token: set ledger.api_token_file or {TOKEN_ENV}"
                )),
                Some(t) if t.len() < MIN_TOKEN => problems.push(format!(
                    "ledger.api_token_file / {TOKEN_ENV}: the token must be at least {MIN_TOKEN} characters"
                )),
                _ => {}
            }
            if l.api_listen == Some(config.listen) {
                problems.push(
                    "ledger.api_listen: must differ from listen (the intake port is open to every host)"
                        .into(),
                );
            }
        }
        if l.shared_dedupe_timeout.is_zero() || l.shared_dedupe_timeout > MAX_SHARED_TIMEOUT {
            problems.push(format!(
                "ledger.shared_dedupe_timeout: must be more than 0 and at most {} (every \
                 signed post may wait this long for the store)",
                humantime::format_duration(MAX_SHARED_TIMEOUT)
            ));
        }
        let webhooks = crate::webhooks::check(&config.webhooks)
            .map_err(|e| problems.extend(e))
            .unwrap_or_default();
        if !config.webhooks.is_empty() && !l.writer {
            problems.push(
                "webhooks: set, but ledger.writer is false: the post office running the ledger \
                 writer queues and sends webhooks (set them there)"
                    .into(),
            );
        }
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let shared_dedupe = match l.shared_dedupe {
            SharedDedupe::Auto => postgres,
            SharedDedupe::On => true,
            SharedDedupe::Off => false,
        };
        let has_store = l.writer || l.api_listen.is_some() || l.url.is_some();
        let suppression = crate::suppression::SuppressionSettings::check(
            &config.suppression,
            has_store,
            config.events,
        )
        .map_err(|p| problems.extend(p))
        .ok();
        let console = crate::console::ConsoleSettings::check(&config.console, l.api_listen)
            .map_err(|p| problems.extend(p))
            .ok()
            .flatten();
        let Some(suppression) = suppression.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        Ok(LedgerSettings {
            url,
            retention: l.retention,
            stuck_after: l.stuck_after,
            writer: l.writer,
            check_interval: l.check_interval,
            api_listen: l.api_listen,
            token,
            shared_dedupe,
            shared_dedupe_timeout: l.shared_dedupe_timeout,
            suppression,
            url_set: l.url.is_some(),
            webhooks,
            webhook_owner: crate::webhooks::dispatch::owner_name(config.listen),
            console,
        })
    }

    /// Whether this post office opens the store: to write it, to serve the admin API, or
    /// (with a `ledger.url` of its own) to answer hosts' `POST /status`.
    pub fn uses_store(&self) -> bool {
        self.writer || self.api_listen.is_some() || self.url_set
    }
}

/// The ledger's metrics (prefix `hedwig_ledger`).
#[derive(Clone, Default)]
pub struct LedgerMetrics {
    /// Messages stuck now (counted by the post office that runs the writer).
    pub stuck: Gauge,
    /// Events written (new to the store).
    pub events_written: Counter,
    /// Events written again that the store already had.
    pub events_duplicate: Counter,
    /// Writer transactions committed.
    pub batches: Counter,
    /// Store failures seen by the writer.
    pub store_errors: Counter,
    /// Events jobs buried because they could not be read.
    pub jobs_buried: Counter,
    /// 1 while the writer can write to the store.
    pub store_up: Gauge,
    /// Messages pruned.
    pub pruned: Counter,
    /// Claims of the shared duplicate-id window that this post office's own window answered
    /// alone: the store was down, slow or failing (`ledger.shared_dedupe`).
    pub dedupe_fallbacks: Counter,
    /// Posts answered as duplicates from a claim another post office completed.
    pub dedupe_found: Counter,
    /// 1 while the shared duplicate-id window answers (0 during an outage; 1 when off).
    pub dedupe_store_up: Gauge,
    /// The webhook dispatcher's counters.
    pub webhooks: crate::webhooks::dispatch::DispatchStats,
}

impl LedgerMetrics {
    /// Registers the metrics in the root `registry` under `hedwig_ledger_`.
    pub fn register(registry: &mut Registry) -> LedgerMetrics {
        let m = LedgerMetrics::default();
        let r = registry.sub_registry_with_prefix("hedwig_ledger");
        r.register(
            "stuck_messages",
            "Messages without a final outcome for every recipient long after they were queued",
            m.stuck.clone(),
        );
        r.register(
            "events_written",
            "Events the ledger writer stored",
            m.events_written.clone(),
        );
        r.register(
            "events_duplicate",
            "Events the ledger writer got again and the store already had",
            m.events_duplicate.clone(),
        );
        r.register(
            "batches",
            "Transactions the ledger writer committed",
            m.batches.clone(),
        );
        r.register(
            "store_errors",
            "Failed writes to the ledger store (the events wait in beanstalkd)",
            m.store_errors.clone(),
        );
        r.register(
            "jobs_buried",
            "Events jobs buried because they could not be read",
            m.jobs_buried.clone(),
        );
        r.register(
            "store_up",
            "1 while the ledger writer can write to the store",
            m.store_up.clone(),
        );
        r.register(
            "pruned",
            "Messages pruned from the ledger",
            m.pruned.clone(),
        );
        r.register(
            "dedupe_fallbacks",
            "Claims of the shared duplicate-id window answered by this post office's own window \
             alone (store down, slow or failing)",
            m.dedupe_fallbacks.clone(),
        );
        r.register(
            "dedupe_found",
            "Posts answered as duplicates from a claim another post office completed",
            m.dedupe_found.clone(),
        );
        r.register(
            "dedupe_store_up",
            "1 while the shared duplicate-id window answers",
            m.dedupe_store_up.clone(),
        );
        m.dedupe_store_up.set(1);
        r.register(
            "webhooks_sent",
            "Webhook requests answered 2xx",
            m.webhooks.sent.clone(),
        );
        r.register(
            "webhooks_retried",
            "Webhook requests that failed and are tried again later",
            m.webhooks.retried.clone(),
        );
        r.register(
            "webhooks_failed",
            "Webhook events given up on after max_age (marked failed)",
            m.webhooks.failed.clone(),
        );
        m
    }

    /// Copies the writer's counters (it keeps its own, without prometheus).
    fn sync(&self, stats: &WriterStats, seen: &mut [u64; 5]) {
        let now = [
            stats.events_written.load(Ordering::Relaxed),
            stats.events_duplicate.load(Ordering::Relaxed),
            stats.batches.load(Ordering::Relaxed),
            stats.store_errors.load(Ordering::Relaxed),
            stats.jobs_buried.load(Ordering::Relaxed),
        ];
        let counters = [
            &self.events_written,
            &self.events_duplicate,
            &self.batches,
            &self.store_errors,
            &self.jobs_buried,
        ];
        for ((counter, now), seen) in counters.iter().zip(now).zip(seen.iter_mut()) {
            counter.inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
        self.store_up
            .set(i64::from(!stats.store_down.load(Ordering::Relaxed)));
    }
}

/// The store, opened on first use and again after a failed open (a PostgreSQL that is down
/// when the post office starts must not stop it).
pub struct StoreHandle {
    url: String,
    options: hedwig_ledger::Options,
    store: tokio::sync::Mutex<Option<Store>>,
    /// Open failures logged (one line per outage, not per try).
    failures: AtomicU64,
}

impl StoreHandle {
    pub fn new(url: String) -> StoreHandle {
        let options = hedwig_ledger::Options {
            acquire_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        StoreHandle::with_options(url, options)
    }

    /// A handle whose pool is opened with `options`.
    pub fn with_options(url: String, options: hedwig_ledger::Options) -> StoreHandle {
        StoreHandle {
            url,
            options,
            store: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
        }
    }

    /// The store if it is open now (never waits).
    pub fn try_current(&self) -> Option<Store> {
        self.store.try_lock().ok().and_then(|slot| slot.clone())
    }

    /// The store, opening it if it is not open yet.
    pub async fn get(&self) -> Result<Store, StoreError> {
        let mut slot = self.store.lock().await;
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        match Store::open_with(&self.url, self.options.clone()).await {
            Ok(store) => {
                if self.failures.swap(0, Ordering::Relaxed) > 0 {
                    tracing::info!(url = %redact(&self.url), "ledger store opened");
                }
                *slot = Some(store.clone());
                Ok(store)
            }
            Err(e) => {
                if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(url = %redact(&self.url), error = %e, "cannot open the ledger store; retrying");
                }
                Err(e)
            }
        }
    }
}

/// Runs the writer, the pruner and the stuck check until `shutdown` (for
/// `ledger.writer: true`).
pub async fn run_writer(
    settings: LedgerSettings,
    handle: Arc<StoreHandle>,
    servers: Vec<String>,
    tubes: Tubes,
    metrics: LedgerMetrics,
    shutdown: CancellationToken,
) {
    let store = loop {
        match handle.get().await {
            Ok(store) => break store,
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    let store = store.with_auto_suppression(settings.suppression.auto.clone());
    tracing::info!(url = %redact(&settings.url), tube = tubes.events(), "ledger writer started");
    // Webhooks: the writer fills the outbox in its transactions, the dispatcher sends it.
    let store = store.with_webhooks(settings.webhooks.iter().map(|e| e.route.clone()).collect());
    let dispatcher = (!settings.webhooks.is_empty()).then(|| {
        tokio::spawn(crate::webhooks::dispatch::run(
            store.clone(),
            settings.webhooks.clone(),
            settings.webhook_owner.clone(),
            metrics.webhooks.clone(),
            shutdown.clone(),
        ))
    });
    let stats = Arc::new(WriterStats::default());
    let config = WriterConfig::new(servers, tubes.events());
    let writer = tokio::spawn(hedwig_ledger::writer::run(
        store.clone(),
        config,
        stats.clone(),
        shutdown.clone(),
    ));
    let mut seen = [0u64; 5];
    let mut logged: HashSet<String> = HashSet::new();
    let mut last_prune: Option<tokio::time::Instant> = None;
    let mut ticks = tokio::time::interval(Duration::from_secs(1).min(settings.check_interval));
    let mut last_check: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        metrics.sync(&stats, &mut seen);
        let now = tokio::time::Instant::now();
        if last_check.is_some_and(|t| now - t < settings.check_interval) {
            continue;
        }
        last_check = Some(now);
        check_stuck(&store, &settings, &metrics, &mut logged).await;
        if last_prune.is_none_or(|t| now - t >= Duration::from_secs(3600)) {
            last_prune = Some(now);
            let cutoff = now_ms().saturating_sub(settings.retention.as_millis() as u64);
            if !settings.webhooks.is_empty() {
                if let Err(e) = store.prune_webhooks(cutoff).await {
                    tracing::warn!(error = %e, "ledger: pruning the webhook outbox failed");
                }
            }
            match store.prune(cutoff, 1000).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics.pruned.inc_by(n);
                    tracing::info!(messages = n, "ledger: pruned records past retention");
                }
                Err(e) => tracing::warn!(error = %e, "ledger: pruning failed; trying again later"),
            }
            match store.prune_suppressions(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "suppression list: pruned expired entries"),
                Err(e) => {
                    tracing::warn!(error = %e, "suppression list: pruning failed; trying again later")
                }
            }
        }
    }
    let _ = writer.await;
    if let Some(d) = dispatcher {
        let _ = d.await;
    }
}

/// Counts stuck messages into the gauge and logs each one once.
async fn check_stuck(
    store: &Store,
    settings: &LedgerSettings,
    metrics: &LedgerMetrics,
    logged: &mut HashSet<String>,
) {
    let now = now_ms();
    match store.stuck_count(now, settings.stuck_after).await {
        Ok(n) => {
            metrics.stuck.set(i64::try_from(n).unwrap_or(i64::MAX));
            if n == 0 {
                logged.clear();
                return;
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "ledger: stuck check failed");
            return;
        }
    }
    if let Ok(stuck) = store.stuck(now, settings.stuck_after, 100).await {
        for m in stuck {
            if logged.len() < 100_000 && logged.insert(m.queue_id.clone()) {
                tracing::warn!(
                    queue_id = %m.queue_id,
                    host = m.host.as_deref().unwrap_or("-"),
                    queued_at = m.queued_at,
                    status = %m.status,
                    "ledger: message stuck: no final outcome for every recipient"
                );
            }
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    hedwig_queue::event::now_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(edit: impl FnOnce(&mut Config)) -> Result<LedgerSettings, Vec<String>> {
        let mut config = Config::default();
        edit(&mut config);
        LedgerSettings::check(&config)
    }

    #[test]
    fn defaults_and_the_url_from_data_dir() {
        let s = check(|_| {}).unwrap();
        assert_eq!(s.url, "sqlite:///var/lib/hedwig/postoffice/ledger.db");
        assert!(
            s.writer,
            "on by default: a single-machine install needs nothing more"
        );
        assert_eq!(s.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(s.stuck_after, Duration::from_secs(5 * 86_400 + 3600));
        let s = check(|c| c.data_dir = "/srv/po".into()).unwrap();
        assert_eq!(s.url, "sqlite:///srv/po/ledger.db");
    }

    #[test]
    fn problems_name_their_keys() {
        let err = check(|c| c.ledger.url = Some("mysql://x".into())).unwrap_err();
        assert!(err[0].starts_with("ledger.url"), "{err:?}");
        let err = check(|c| c.ledger.retention = Duration::from_secs(60)).unwrap_err();
        assert!(err[0].starts_with("ledger.retention"), "{err:?}");
        let api = SocketAddr::from(([127, 0, 130, 60], 8026));
        let err = check(|c| c.ledger.api_listen = Some(api)).unwrap_err();
        assert!(err[0].contains("no token"), "{err:?}");
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let err = check(|c| {
            c.ledger.api_listen = Some(api);
            c.ledger.api_token_file = Some(short.clone());
        })
        .unwrap_err();
        assert!(err[0].contains("at least 16"), "{err:?}");
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        let s = check(|c| {
            c.ledger.api_listen = Some(api);
            c.ledger.api_token_file = Some(good.clone());
        })
        .unwrap();
        assert_eq!(s.token.as_deref(), Some("0123456789abcdef0123"));
        let err = check(|c| {
            c.ledger.api_listen = Some(c.listen);
            c.ledger.api_token_file = Some(good.clone());
        })
        .unwrap_err();
        assert!(err[0].contains("must differ from listen"), "{err:?}");
        let err =
            check(|c| c.ledger.api_token_file = Some(dir.path().join("missing"))).unwrap_err();
        assert!(err[0].starts_with("ledger.api_token_file"), "{err:?}");
    }

    #[test]
    fn shared_dedupe_is_on_with_postgresql_unless_set() {
        let pg = Some("postgres://hedwig@db/hedwig".to_owned());
        let s = check(|_| {}).unwrap();
        assert!(!s.shared_dedupe, "auto: off with SQLite");
        assert_eq!(s.shared_dedupe_timeout, Duration::from_millis(200));
        let s = check(|c| c.ledger.url = pg.clone()).unwrap();
        assert!(s.shared_dedupe, "auto: on with PostgreSQL");
        let s = check(|c| {
            c.ledger.url = pg.clone();
            c.ledger.shared_dedupe = SharedDedupe::Off;
        })
        .unwrap();
        assert!(!s.shared_dedupe);
        let s = check(|c| c.ledger.shared_dedupe = SharedDedupe::On).unwrap();
        assert!(s.shared_dedupe, "on: with SQLite too");
        for bad in [Duration::ZERO, Duration::from_secs(6)] {
            let err = check(|c| c.ledger.shared_dedupe_timeout = bad).unwrap_err();
            assert!(
                err[0].starts_with("ledger.shared_dedupe_timeout"),
                "{err:?}"
            );
        }
        // As written in YAML (`on` and `off` are strings in YAML 1.2) and in the environment.
        let file = tempfile::NamedTempFile::new().unwrap();
        for (text, want) in [
            ("auto", SharedDedupe::Auto),
            ("on", SharedDedupe::On),
            ("off", SharedDedupe::Off),
        ] {
            let yaml = format!("ledger:\n  shared_dedupe: {text}\n  shared_dedupe_timeout: 50ms\n");
            std::fs::write(file.path(), yaml).unwrap();
            let c: Config = hedwig_core::config::load_from_env(
                Some(file.path()),
                std::iter::empty::<(&str, &str)>(),
            )
            .unwrap();
            assert_eq!(c.ledger.shared_dedupe, want);
            assert_eq!(c.ledger.shared_dedupe_timeout, Duration::from_millis(50));
            let env = [("HEDWIG_LEDGER__SHARED_DEDUPE", text)];
            let c: Config = hedwig_core::config::load_from_env(None, env).unwrap();
            assert_eq!(c.ledger.shared_dedupe, want);
        }
        std::fs::write(file.path(), "ledger:\n  shared_dedupe: sometimes\n").unwrap();
        assert!(hedwig_core::config::load_from_env::<Config, _, &str, &str>(
            Some(file.path()),
            std::iter::empty::<(&str, &str)>()
        )
        .is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://hedwig:s3cret@db:5432/hedwig"),
            "postgres://hedwig:***@db:5432/hedwig"
        );
        assert_eq!(redact("postgres://hedwig@db/h"), "postgres://hedwig@db/h");
        assert_eq!(redact("sqlite:///var/x.db"), "sqlite:///var/x.db");
    }
}
