//! [`AppState`]: what every request handler shares, built once from the config.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, Secrets};
use crate::dedupe::Dedupe;
use crate::holds::HoldCache;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::queue::Queue;

/// Large request bodies held in memory at once (see [`crate::body`]).
pub const LARGE_BODIES: usize = 16;

pub struct AppState {
    pub config: Config,
    pub secrets: Secrets,
    pub policies: Policies,
    pub dedupe: Dedupe,
    pub queue: Queue,
    /// Which hosts are held (their mail goes to the held tube).
    pub holds: HoldCache,
    pub metrics: Metrics,
    /// Largest HTTP body: the message limit, with room for form and JSON escaping.
    pub body_limit: usize,
    pub large_bodies: Arc<Semaphore>,
    /// Set on SIGTERM: `/health` answers 503 so that load balancers stop sending.
    pub draining: AtomicBool,
}

impl AppState {
    pub fn new(config: Config, secrets: Secrets, queue: Queue) -> AppState {
        // Form encoding of JSON-escaped text can triple a message (a CRLF becomes `%5Cr%5Cn`).
        let body_limit = config
            .max_message_size
            .as_usize()
            .saturating_mul(3)
            .saturating_add(64 * 1024);
        AppState {
            policies: Policies::new(&config),
            dedupe: Dedupe::new(config.duplicate_window, config.duplicate_capacity),
            secrets,
            holds: HoldCache::new(queue.addrs()),
            queue,
            metrics: Metrics::default(),
            body_limit,
            large_bodies: Arc::new(Semaphore::new(LARGE_BODIES)),
            draining: AtomicBool::new(false),
            config,
        }
    }
}
