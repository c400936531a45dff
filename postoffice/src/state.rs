//! [`AppState`]: what every request handler shares, built once from the config.

use std::sync::Arc;

use hedwig_queue::emit::Emitters;
use hedwig_queue::hold::HoldCache;
use hedwig_queue::Tubes;
use tokio::sync::Semaphore;

use crate::config::{Config, Secrets};
use crate::dedupe::Dedupe;
use crate::ledger::claims::SharedWindow;
use crate::ledger::{LedgerSettings, StoreHandle};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::queue::Queue;

pub struct AppState {
    pub config: Config,
    pub secrets: Secrets,
    pub policies: Policies,
    /// The lanes and the fairness counters.
    pub lanes: crate::lanes::Lanes,
    pub dedupe: Dedupe,
    pub queue: Queue,
    /// Which hosts are held (their mail goes to the held tube).
    pub holds: HoldCache,
    /// The ledger's events tube on each server; `None` with `events: false`.
    pub events: Option<Emitters>,
    /// The suppression list intake checks; `None` when intake does not suppress.
    pub suppressions: Option<Arc<crate::suppression::SuppressionSet>>,
    pub metrics: Metrics,
    /// The registry behind `metrics`, and the draining flag: set on SIGTERM, `/health` then
    /// answers 503 so that load balancers stop sending.
    pub shell: hedwig_service::ops::Shell,
    /// Largest HTTP body: the message limit, with room for form and JSON escaping.
    pub body_limit: usize,
    /// Largest body of the raw form ([`Config::raw_body_limit`]).
    pub raw_body_limit: usize,
    /// Signed (and authenticated) requests handled at once: `max_concurrent_requests`.
    pub requests: Arc<Semaphore>,
    /// Unsigned requests whose bodies are read at once: `max_unauthenticated_requests`.
    pub unauthenticated_requests: Arc<Semaphore>,
    /// Bytes of request bodies held (see [`crate::body`]): all, and the unsigned share.
    pub bytes_in_flight: Arc<Semaphore>,
    pub unauthenticated_bytes: Arc<Semaphore>,
    /// The ledger store, when this post office uses one (`ledger.writer`, `ledger.api_listen`
    /// or `ledger.url`): read by `POST /status`, written by the writer, opened late.
    pub ledger: Option<Arc<StoreHandle>>,
    /// `POST /status` requests handled at once ([`crate::status::MAX_CONCURRENT`]).
    pub status_requests: Arc<Semaphore>,
    /// The one-click unsubscribe key (`unsubscribe:`); `None`: `/unsubscribe/` answers 404.
    pub unsubscribe: Option<hedwig_core::unsubscribe::UnsubscribeKey>,
}

impl AppState {
    pub fn new(
        config: Config,
        secrets: Secrets,
        tubes: Tubes,
        queue: Queue,
        ledger: &LedgerSettings,
    ) -> AppState {
        let body_limit = config.body_limit();
        let raw_body_limit = config.raw_body_limit();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let shared = ledger.shared_dedupe.then(|| {
            Arc::new(SharedWindow::new(
                &ledger.url,
                ledger.shared_dedupe_timeout,
                config.duplicate_window,
                metrics.ledger.clone(),
            ))
        });
        AppState {
            policies: Policies::new(&config),
            lanes: crate::lanes::Lanes::new(&config),
            dedupe: Dedupe::new(config.duplicate_window, config.duplicate_capacity)
                .with_shared(shared),
            secrets,
            events: config.events.then(|| Emitters::new(queue.addrs(), &tubes)),
            holds: HoldCache::new(queue.addrs(), tubes),
            suppressions: None,
            queue,
            metrics,
            shell: hedwig_service::ops::Shell::new(registry),
            body_limit,
            raw_body_limit,
            requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            unauthenticated_requests: Arc::new(Semaphore::new(config.max_unauthenticated_requests)),
            bytes_in_flight: Arc::new(Semaphore::new(budget(config.max_bytes_in_flight.0))),
            unauthenticated_bytes: Arc::new(Semaphore::new(budget(
                config.unauthenticated_bytes_in_flight.0,
            ))),
            ledger: ledger
                .uses_store()
                .then(|| Arc::new(StoreHandle::new(ledger.url.clone()))),
            status_requests: Arc::new(Semaphore::new(crate::status::MAX_CONCURRENT)),
            unsubscribe: None,
            config,
        }
    }
}

/// A byte budget as semaphore permits (at most what a semaphore holds).
fn budget(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}
