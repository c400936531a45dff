//! The background retries: posts spooled messages again with capped exponential backoff until
//! the postoffice takes them. It also picks up what an earlier run left in the spool.
//!
//! Messages arrive on a channel with their attempt count; at most [`CONCURRENCY`] posts run at
//! once. When a post succeeds (here or while a client waits), messages still waiting out their
//! backoff are retried at once (at most once per `retry_min`). On shutdown it stops; every
//! message it held is still in the spool for the next start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handoff::{settle_later, Core};
use crate::metrics::SpoolState;
use crate::post::{RetryReason, Verdict};
use crate::spool::SpoolHeader;

/// Posts in flight at once.
pub const CONCURRENCY: usize = 8;

/// The delay before attempt `attempts + 1`: `min * 2^(attempts-1)`, capped at `max`, with
/// ±10 % jitter so that many messages spooled together do not retry in lockstep.
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp).min(max);
    let jitter = rand::thread_rng().gen_range(0.9..=1.1);
    base.mul_f64(jitter).min(max)
}

/// What the retry loop holds, readable for metrics.
#[derive(Default)]
pub struct Waiting {
    /// id → (received_at, size)
    entries: std::sync::Mutex<HashMap<String, (u64, u64)>>,
}

impl Waiting {
    fn insert(&self, h: &SpoolHeader) {
        if let Ok(mut m) = self.entries.lock() {
            m.insert(h.id.clone(), (h.received_at, h.size));
        }
    }
    fn remove(&self, id: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(id);
        }
    }
    /// Depth, bytes and the age of the oldest message waiting for a retry.
    pub fn state(&self, spool_bytes: u64) -> SpoolState {
        let now = hedwig_core::unix_now();
        match self.entries.lock() {
            Ok(m) => SpoolState {
                depth: m.len() as u64,
                bytes: spool_bytes,
                oldest_age_seconds: m
                    .values()
                    .map(|(at, _)| now.saturating_sub(*at))
                    .max()
                    .unwrap_or(0),
            },
            Err(_) => SpoolState::default(),
        }
    }
}

/// Runs until `shutdown`. `initial` are the messages found in the spool at start.
pub async fn run(
    core: Arc<Core>,
    waiting: Arc<Waiting>,
    initial: Vec<SpoolHeader>,
    mut rx: mpsc::UnboundedReceiver<(SpoolHeader, u32)>,
    shutdown: CancellationToken,
) {
    // due time (with a sequence number for uniqueness) → (header, attempts so far)
    let mut schedule: BTreeMap<(Instant, u64), (SpoolHeader, u32)> = BTreeMap::new();
    let mut seq = 0u64;
    let now = Instant::now();
    if !initial.is_empty() {
        tracing::info!(
            count = initial.len(),
            "forwarding messages left in the spool"
        );
    }
    for h in initial {
        waiting.insert(&h);
        schedule.insert((now, seq), (h, 0));
        seq += 1;
    }
    let mut in_flight: JoinSet<(SpoolHeader, u32, Verdict)> = JoinSet::new();
    let settings = &core.settings;
    let mut last_pull: Option<Instant> = None;
    loop {
        // Start what is due, up to the concurrency limit.
        while in_flight.len() < CONCURRENCY {
            let Some(entry) = schedule.first_entry() else {
                break;
            };
            if entry.key().0 > Instant::now() {
                break;
            }
            let (header, attempts) = entry.remove();
            let core = core.clone();
            in_flight.spawn(async move {
                let verdict = match core.spool.load(&header.id) {
                    Ok(spooled) => {
                        core.poster
                            .post(&header, spooled.message, core.settings.forward_timeout)
                            .await
                    }
                    Err(err) => {
                        tracing::error!(%err, message_id = %header.id, "cannot read spooled message");
                        Verdict::Retry(RetryReason::Unexpected(0, err.to_string()))
                    }
                };
                (header, attempts + 1, verdict)
            });
        }
        let next_due = schedule
            .keys()
            .next()
            .map(|(at, _)| *at)
            .filter(|_| in_flight.len() < CONCURRENCY);
        let sleep = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            item = rx.recv() => match item {
                Some((header, attempts)) => {
                    waiting.insert(&header);
                    let delay = if attempts == 0 {
                        Duration::ZERO
                    } else {
                        backoff(attempts, settings.retry_min, settings.retry_max)
                    };
                    schedule.insert((Instant::now() + delay, seq), (header, attempts));
                    seq += 1;
                }
                None => break,
            },
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                match done {
                    Ok((header, attempts, verdict)) => {
                        if !matches!(verdict, Verdict::Retry(_)) {
                            waiting.remove(&header.id);
                        }
                        if matches!(verdict, Verdict::Accepted { .. }) {
                            core.postoffice_up.notify_one();
                        }
                        // A retry comes back through the channel with its attempt count.
                        settle_later(&core, header, attempts, verdict);
                    }
                    Err(err) => tracing::error!(%err, "forward task failed"),
                }
            }
            _ = core.postoffice_up.notified() => {
                // The postoffice is back: retry what waits now, at most once per retry_min.
                let now = Instant::now();
                if last_pull.is_none_or(|t| now >= t + settings.retry_min) {
                    last_pull = Some(now);
                    let waiting_later: Vec<_> = schedule
                        .keys()
                        .filter(|(at, _)| *at > now)
                        .copied()
                        .collect();
                    for key in waiting_later {
                        if let Some(entry) = schedule.remove(&key) {
                            schedule.insert((now, key.1), entry);
                        }
                    }
                }
            }
            _ = sleep => {}
        }
    }
    in_flight.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let min = Duration::from_secs(5);
        let max = Duration::from_secs(600);
        let near = |d: Duration, s: f64| (d.as_secs_f64() - s).abs() <= s * 0.1 + 1e-9;
        assert!(near(backoff(1, min, max), 5.0));
        assert!(near(backoff(2, min, max), 10.0));
        assert!(near(backoff(4, min, max), 40.0));
        assert!(backoff(10, min, max) <= max);
        assert!(backoff(1000, min, max) <= max);
        assert!(backoff(1000, min, max) >= max.mul_f64(0.9));
    }
}
