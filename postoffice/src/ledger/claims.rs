//! The duplicate-id window shared through the ledger store (`ledger.shared_dedupe`), so that
//! a mailman retry that a load balancer sends to another post office than the first post is
//! still answered with the first queue id (docs/ledger.md, "The shared duplicate-id window").
//!
//! [`crate::dedupe::Dedupe`] asks its in-process window first (the fast path: a repeat to
//! the same post office never reaches the store), then [`SharedWindow::claim`]:
//! - won: queue the message; [`SharedClaim::complete`] records its queue id in the store, a
//!   dropped claim (queueing failed, refused by the rate limit) is released in the background;
//! - queued by another post office: the caller answers with that queue id, as for a local
//!   repeat;
//! - pending at another post office: wait and ask again (as a local repeat waits for the
//!   first), until it is queued, released, or abandoned (then this claim takes it over);
//! - store down, slow (`ledger.shared_dedupe_timeout` per step) or failing: unavailable; the
//!   in-process window answers alone. Counted (`hedwig_ledger_dedupe_fallbacks_total`),
//!   logged once per outage; for a second after a failure the store is not asked at all, so
//!   an outage costs intake nothing but the first timeout. The store is opened in a task of
//!   its own at start (and again until it opens): until then the in-process window answers.
//!   A claim statement that timed out or failed may have been carried out all the same: the post
//!   keeps it as a claim and completes it like a won one (completing inserts the claim if it
//!   never landed). A completion or release the store does not take is tried again every
//!   second in the background, so that no claim of a queued message stays pending for the
//!   others to wait on and then take over.
//!
//! Not here: the SQL (`hedwig_ledger::claims`), the in-process window (`crate::dedupe`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hedwig_ledger::{ClaimLimits, Claimed, Store, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{now_ms, redact, LedgerMetrics, StoreHandle};

/// A claim still pending this long was abandoned (its post office died between claim and
/// put): another post office takes it over. A put takes at most about 12 s per beanstalkd
/// server (connect 2 s, I/O 10 s), so a live claim never gets this old.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// After a failed or slow store call, claims skip the store this long.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How often claims past the window are deleted, and the time a pruning pass may take.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections of the claims' own pool (apart from the writer's and the API's).
const POOL_SIZE: u32 = 16;

/// The shared window of one post office.
pub struct SharedWindow {
    handle: StoreHandle,
    url: String,
    /// This process's name in `claims.claimed_by`.
    claimer: String,
    timeout: Duration,
    limits: ClaimLimits,
    metrics: LedgerMetrics,
    /// Until when the store is skipped after a failure.
    skip_until: Mutex<Option<Instant>>,
    /// Whether the current outage was logged.
    down: AtomicBool,
    /// Whether a task is opening the store.
    opening: AtomicBool,
}

/// The outcome of [`SharedWindow::claim`].
pub enum Shared {
    /// This post office holds the id in the store: queue the message.
    Won(SharedClaim),
    /// Another post office queued it under this queue id.
    Queued(String),
    /// The store did not answer in time: the in-process window answers alone. With a claim
    /// when the claim statement was sent (it may have been carried out after all): it is
    /// completed or released like a won one, so that a claim that did land is not left
    /// pending for the other post offices to wait on.
    Unavailable(Option<SharedClaim>),
}

/// Why [`SharedWindow::ask`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    /// The store was not asked (not open yet, or skipped after a failure).
    NotAsked,
    /// It answered with an error.
    Failed,
    /// It did not answer within the timeout: the statement may have been carried out.
    TimedOut,
}

/// A claim this post office holds in the store. Dropping it without
/// [`complete`](SharedClaim::complete) releases it (in a background task).
pub struct SharedClaim {
    window: Arc<SharedWindow>,
    key: Option<(String, String)>,
}

impl SharedWindow {
    /// The shared window on the store at `url`; `window` is the post office's
    /// `duplicate_window`.
    pub fn new(
        url: &str,
        timeout: Duration,
        window: Duration,
        metrics: LedgerMetrics,
    ) -> SharedWindow {
        let options = hedwig_ledger::Options {
            max_connections: POOL_SIZE,
            acquire_timeout: timeout,
            ..Default::default()
        };
        SharedWindow {
            handle: StoreHandle::with_options(url.to_owned(), options),
            url: url.to_owned(),
            claimer: claimer_name(),
            timeout,
            limits: ClaimLimits {
                window,
                stale_after: STALE_AFTER,
            },
            metrics,
            skip_until: Mutex::new(None),
            down: AtomicBool::new(false),
            opening: AtomicBool::new(false),
        }
    }

    /// Opens the store in a task of its own (connecting and migrating may take longer than
    /// a claim may wait, and must not be cancelled by that wait), retrying every 2 s until
    /// it is open or `shutdown`. Claims before then use the in-process window.
    pub fn open(self: &Arc<Self>, shutdown: CancellationToken) {
        if self.opening.swap(true, Ordering::AcqRel) {
            return;
        }
        let window = self.clone();
        tokio::spawn(async move {
            for _ in 0..u32::MAX {
                if window.handle.get().await.is_ok() {
                    tracing::info!(
                        url = %redact(&window.url), claimer = %window.claimer,
                        "shared duplicate window ready"
                    );
                    break;
                }
                if shutdown.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            window.opening.store(false, Ordering::Release);
        });
    }

    /// This post office's name in the store's claims.
    pub fn claimer(&self) -> &str {
        &self.claimer
    }

    /// Claims `(host, id)` in the store; waits while another post office queues it.
    pub async fn claim(self: &Arc<Self>, host: &str, id: &str) -> Shared {
        // Past this, a claim pending elsewhere has been taken over by the claim statement
        // itself; the bound only guards against a claimer whose clock runs far ahead.
        let deadline = Instant::now() + STALE_AFTER + Duration::from_secs(5);
        let mut pause = Duration::from_millis(10);
        loop {
            let claimer = self.claimer.clone();
            let limits = self.limits;
            let claimed = self
                .ask(false, |store| async move {
                    store.claim(host, id, &claimer, now_ms(), limits).await
                })
                .await;
            match claimed {
                Ok(Claimed::Won) => return Shared::Won(self.held(host, id)),
                Ok(Claimed::Queued(queue_id)) => {
                    self.metrics.dedupe_found.inc();
                    return Shared::Queued(queue_id);
                }
                Ok(Claimed::Pending { claimed_by, .. }) => {
                    if Instant::now() >= deadline {
                        tracing::warn!(
                            host, message_id = id, claimed_by = %claimed_by,
                            "shared duplicate window: the claim of another post office stays \
                             pending; queueing with this post office's window only"
                        );
                        self.metrics.dedupe_fallbacks.inc();
                        return Shared::Unavailable(None);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(missed) => {
                    self.metrics.dedupe_fallbacks.inc();
                    // Sent but not answered (timed out, or the connection broke): it may
                    // have been carried out.
                    let maybe = missed != Missed::NotAsked;
                    return Shared::Unavailable(maybe.then(|| self.held(host, id)));
                }
            }
        }
    }

    fn held(self: &Arc<Self>, host: &str, id: &str) -> SharedClaim {
        SharedClaim {
            window: self.clone(),
            key: Some((host.to_owned(), id.to_owned())),
        }
    }

    /// Runs `call` on the store within the timeout; a failure or timeout is logged once per
    /// outage. Unless `always`, the store is not asked for a second after a failure.
    async fn ask<T, F, Fut>(&self, always: bool, call: F) -> Result<T, Missed>
    where
        F: FnOnce(Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        if !always && self.skipping() {
            return Err(Missed::NotAsked);
        }
        let Some(store) = self.handle.try_current() else {
            // Not open yet (being opened at start, or the open failed: `StoreHandle` logged
            // it and the opening task tries again).
            self.metrics.dedupe_store_up.set(0);
            return Err(Missed::NotAsked);
        };
        let answer = tokio::time::timeout(self.timeout, call(store)).await;
        match answer {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = %redact(&self.url), "shared duplicate window available again");
                }
                self.metrics.dedupe_store_up.set(1);
                Ok(value)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Err(Missed::Failed)
            }
            Err(_) => {
                self.failed(&format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ));
                Err(Missed::TimedOut)
            }
        }
    }

    fn skipping(&self) -> bool {
        let skip = self.skip_until.lock().unwrap_or_else(|p| p.into_inner());
        skip.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&self, why: &str) {
        *self.skip_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + SKIP_AFTER_FAILURE);
        self.metrics.dedupe_store_up.set(0);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                url = %redact(&self.url), error = why,
                "shared duplicate window unavailable: each post office answers repeats from \
                 its own window until the store is back"
            );
        }
    }

    /// Opens the store, then deletes claims past the window every 10 minutes until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.open(shutdown.clone());
        let mut ticks = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let window_ms = u64::try_from(self.limits.window.as_millis()).unwrap_or(u64::MAX);
            let cutoff = now_ms().saturating_sub(window_ms);
            let Some(store) = self.handle.try_current() else {
                continue;
            };
            let pruned =
                tokio::time::timeout(PRUNE_TIMEOUT, store.prune_claims(cutoff, 1000)).await;
            match pruned {
                Ok(Ok(n)) if n > 0 => {
                    tracing::debug!(claims = n, "shared duplicate window: pruned")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "shared duplicate window: pruning failed")
                }
                Err(_) => tracing::debug!("shared duplicate window: pruning timed out"),
            }
        }
    }
}

/// What is left to do with a claim.
enum Settle {
    Complete(String),
    Release,
}

impl SharedWindow {
    /// Completes or releases `(host, id)` once. `Ok(false)`: nothing to do (another claimer
    /// holds it, or it is completed already).
    async fn settle_once(&self, host: &str, id: &str, what: &Settle) -> Result<bool, Missed> {
        let claimer = self.claimer.clone();
        self.ask(true, |store| async move {
            match what {
                Settle::Complete(queue_id) => {
                    store
                        .complete_claim(host, id, &claimer, queue_id, now_ms())
                        .await
                }
                Settle::Release => store.release_claim(host, id, &claimer).await,
            }
        })
        .await
    }

    /// [`settle_once`](Self::settle_once), then, while the store does not take it, again
    /// every second for [`STALE_AFTER`]: a claim left pending would make the other post
    /// offices wait for it, then take it over and queue the message again. Tasks of this
    /// kind exist only for claims made before an outage (during one, claims are not made).
    async fn settle(self: Arc<Self>, host: String, id: String, what: Settle) {
        let attempts = STALE_AFTER.as_secs().max(1);
        for attempt in 0..=attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if self.settle_once(&host, &id, &what).await.is_ok() {
                return;
            }
        }
    }
}

impl SharedClaim {
    /// Records the queue id in the store: within the timeout, or else in the background once
    /// the store answers again.
    pub async fn complete(mut self, queue_id: &str) {
        let Some((host, id)) = self.key.take() else {
            return;
        };
        let what = Settle::Complete(queue_id.to_owned());
        match self.window.settle_once(&host, &id, &what).await {
            Ok(true) => {}
            // An uncertain claim that did not land was recorded by the completion itself;
            // `false` means another post office claimed the id in between.
            Ok(false) => tracing::warn!(
                queue_id, host = %host, message_id = %id,
                "shared duplicate window: another post office holds this message id (it took \
                 over this post office's claim, or claimed it while the store was slow); the \
                 message may be queued twice"
            ),
            Err(_) => {
                tokio::spawn(self.window.clone().settle(host, id, what));
            }
        }
    }
}

impl Drop for SharedClaim {
    fn drop(&mut self) {
        let Some((host, id)) = self.key.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(self.window.clone().settle(host, id, Settle::Release));
    }
}

/// `<host name>:<pid>:<random>`: names this process's claims (a restarted post office is
/// another claimer: its predecessor's pending claims are abandoned, not its own).
fn claimer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().take(64).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "postoffice".into());
    let random = hedwig_core::new_queue_id();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &random[random.len().saturating_sub(8)..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimer_names_differ_per_window() {
        let a = claimer_name();
        assert_eq!(a.split(':').count(), 3, "{a}");
        assert!(a.contains(&format!(":{}:", std::process::id())));
        assert_ne!(a, claimer_name());
    }

    #[tokio::test]
    async fn an_unreachable_store_answers_unavailable_within_the_timeout() {
        // Nothing listens on port 9 of this address: never opened, never waited for.
        let window = Arc::new(SharedWindow::new(
            "postgres://hedwig@127.0.130.61:9/hedwig",
            Duration::from_millis(200),
            Duration::from_secs(60),
            LedgerMetrics::default(),
        ));
        let shutdown = CancellationToken::new();
        window.open(shutdown.clone());
        for n in 1..=3 {
            let started = std::time::Instant::now();
            assert!(matches!(
                window.claim("h", "m").await,
                Shared::Unavailable(None)
            ));
            assert!(started.elapsed() < Duration::from_millis(100));
            assert_eq!(window.metrics.dedupe_fallbacks.get(), n);
            assert_eq!(window.metrics.dedupe_store_up.get(), 0);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        shutdown.cancel();
    }
}
