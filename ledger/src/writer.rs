//! The ledger writer: moves events from the events tube of every beanstalkd server into the
//! store.
//!
//! One task per server watches `<prefix>-events`, reserves jobs until it holds
//! [`WriterConfig::max_events`] events or [`WriterConfig::max_wait`] has passed since the
//! first, writes all their events with one [`Store::write`] (one transaction) and only then
//! deletes the jobs. So:
//!
//! - a writer killed after the commit and before the deletes leaves the jobs to be reserved
//!   again (by it after a restart, or by beanstalkd's time-to-run); the store ignores events
//!   it has, so nothing is duplicated;
//! - when the store fails (down, disk full, read-only), the jobs are released with a delay and
//!   the writer backs off (doubling up to [`WriterConfig::max_backoff`]) and tries again by
//!   itself: nothing is lost, and the failure is logged once, with one line again when the
//!   store is back;
//! - a job whose body is not an events batch is buried (with a log line), for an operator to
//!   look at (`peek-buried`), and never blocks the others.
//!
//! Not here: what the events mean (`apply`), who puts them (the post office and workers).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beanstalk::{Client, Job};
use hedwig_queue::event::{Batch, Event, QUEUED_ID_PREFIX};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Priority for burying and releasing events jobs.
const PRIORITY: u32 = 1024;

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// beanstalkd servers (`host:port`); one task each.
    pub servers: Vec<String>,
    /// The events tube (`Tubes::events()`).
    pub tube: String,
    /// Most events written in one transaction.
    pub max_events: usize,
    /// Longest time a batch gathers after its first job.
    pub max_wait: Duration,
    /// First delay after a store failure (the jobs' release delay and the wait before the
    /// next try); doubles on each failure in a row.
    pub backoff: Duration,
    /// Cap of the doubling backoff.
    pub max_backoff: Duration,
    /// Test hook: after a commit, notify this and stop before deleting the jobs (as a writer
    /// killed at the worst moment does). `None` in production.
    #[doc(hidden)]
    pub stall_after_commit: Option<Arc<Notify>>,
}

impl WriterConfig {
    /// Defaults for `servers` and `tube`: batches of up to 1,000 events or 200 ms, backoff
    /// from 1 s to 60 s.
    pub fn new(servers: Vec<String>, tube: impl Into<String>) -> WriterConfig {
        WriterConfig {
            servers,
            tube: tube.into(),
            max_events: 1000,
            max_wait: Duration::from_millis(200),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            stall_after_commit: None,
        }
    }
}

/// What the writer did, for metrics. Shared by all its tasks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Events the store took as new.
    pub events_written: AtomicU64,
    /// Events the store already had (written again after a crash or a redelivery).
    pub events_duplicate: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Store failures (each one a batch released for later).
    pub store_errors: AtomicU64,
    /// Jobs buried because their body was not an events batch.
    pub jobs_buried: AtomicU64,
    /// Whether the store is failing now.
    pub store_down: AtomicBool,
}

/// Runs the writer until `shutdown`: one task per server. Jobs reserved at shutdown go back
/// to beanstalkd when the connection closes.
pub async fn run(
    store: Store,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for server in config.servers.clone() {
        tasks.spawn(serve(
            store.clone(),
            config.clone(),
            server,
            stats.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Sleeps `d`; false when `shutdown` came first.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// The loop of one server.
async fn serve(
    store: Store,
    config: WriterConfig,
    server: String,
    stats: Arc<WriterStats>,
    shutdown: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut queue_down = false;
    let mut backoff = config.backoff;
    let mut recent = Recent::new(RECENT_IDS);
    while !shutdown.is_cancelled() {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&server, &config.tube).await {
                Ok(c) => {
                    if queue_down {
                        tracing::info!(server, "ledger writer: beanstalkd reachable again");
                        queue_down = false;
                    }
                    client.insert(c)
                }
                Err(e) => {
                    if !queue_down {
                        tracing::warn!(server, error = %e, "ledger writer: cannot reach beanstalkd; retrying");
                        queue_down = true;
                    }
                    if !pause(Duration::from_secs(1), &shutdown).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let jobs = tokio::select! {
            jobs = gather(c, &config, &shutdown) => jobs,
            _ = shutdown.cancelled() => break,
        };
        let jobs = match jobs {
            Ok(jobs) => jobs,
            Err(e) => {
                if !queue_down {
                    tracing::warn!(server, error = %e, "ledger writer: beanstalkd failed; retrying");
                    queue_down = true;
                }
                client = None;
                if !pause(Duration::from_secs(1), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        queue_down = false;
        if jobs.is_empty() {
            continue;
        }
        let mut ids = Vec::with_capacity(jobs.len());
        let mut events: Vec<Event> = Vec::new();
        let mut skipped = 0u64;
        for job in jobs {
            match Batch::decode(&job.body) {
                Ok(batch) => {
                    ids.push(job.id);
                    let (before, all) = (events.len(), batch.events.len());
                    events.extend(batch.events.into_iter().filter(|e| !recent.contains(&e.id)));
                    skipped += (all - (events.len() - before)) as u64;
                }
                Err(e) => {
                    tracing::error!(server, job = job.id, error = %e, "ledger writer: burying an events job that cannot be read");
                    stats.jobs_buried.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = c.bury(job.id, PRIORITY).await {
                        tracing::warn!(server, job = job.id, error = %e, "ledger writer: cannot bury job");
                    }
                }
            }
        }
        match store.write(&events).await {
            Ok(new) => {
                backoff = config.backoff;
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .events_written
                    .fetch_add(new as u64, Ordering::Relaxed);
                stats.events_duplicate.fetch_add(
                    (events.len() - new.min(events.len())) as u64 + skipped,
                    Ordering::Relaxed,
                );
                // In the store now, whether new or not: a later copy is skipped.
                recent.remember(events.iter().map(|e| e.id.as_str()));
                if stats.store_down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "ledger writer: store available again; writing the events that waited"
                    );
                }
                if let Some(stall) = &config.stall_after_commit {
                    stall.notify_one();
                    std::future::pending::<()>().await;
                }
                // A failed delete leaves the job to come back after its time-to-run:
                // written again, it changes nothing.
                for chunk in ids.chunks(PIPELINE) {
                    match c.delete_all(chunk).await {
                        Ok(results) => {
                            for (id, result) in chunk.iter().zip(results) {
                                if let Err(e) = result {
                                    tracing::warn!(server, job = id, error = %e, "ledger writer: cannot delete a written job");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(server, jobs = chunk.len(), error = %e, "ledger writer: cannot delete written jobs");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                // A store that fails may come back without what it acknowledged (a
                // PostgreSQL failover to a replica behind): from now on every copy goes to
                // the store again.
                recent.clear();
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                if !stats.store_down.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "ledger writer: cannot write to the ledger store; events wait in beanstalkd and are retried with backoff");
                }
                for id in ids {
                    let _ = c.release(id, PRIORITY, backoff).await;
                }
                if !pause(backoff, &shutdown).await {
                    break;
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

async fn connect(server: &str, tube: &str) -> beanstalk::Result<Client> {
    let mut c = Client::connect(server).await?;
    c.watch(tube).await?;
    c.ignore("default").await?;
    Ok(c)
}

/// Reserves jobs for one batch: waits up to a second for the first, then takes what becomes
/// ready until `max_events` events or `max_wait` (polling every 10 ms), up to [`PIPELINE`]
/// jobs per round trip.
async fn gather(
    c: &mut Client,
    config: &WriterConfig,
    shutdown: &CancellationToken,
) -> beanstalk::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    match c.reserve_with_timeout(Duration::from_secs(1)).await {
        Ok(job) => jobs.push(job),
        Err(beanstalk::Error::TimedOut) | Err(beanstalk::Error::DeadlineSoon) => return Ok(jobs),
        Err(e) => return Err(e),
    }
    let started = Instant::now();
    // Counting events needs the body; a cheap upper bound is enough: one JSON event is
    // at least 60 bytes, and a batch carries at least one.
    let mut events = estimate(&jobs[0]);
    while events < config.max_events {
        // Each job holds at least one event: never more jobs than events still wanted.
        let want = (config.max_events - events).min(PIPELINE);
        // An error drops the connection: the jobs held so far go back to the ready queue.
        let ready = c.reserve_ready(want).await?;
        let drained = ready.jobs.len() < want;
        let mut surplus = Vec::new();
        for job in ready.jobs {
            if events >= config.max_events {
                // Jobs of many events (the emitters pack up to 1,000 in one) filled the
                // batch before this one: it goes back, so a batch exceeds `max_events` by at
                // most its last job, as when jobs were taken one at a time.
                surplus.push(job.id);
                continue;
            }
            events += estimate(&job);
            jobs.push(job);
        }
        for id in surplus {
            c.release(id, PRIORITY, Duration::ZERO).await?;
        }
        if ready.deadline_soon {
            break;
        }
        if drained {
            let left = config.max_wait.saturating_sub(started.elapsed());
            if left.is_zero() || !pause(left.min(Duration::from_millis(10)), shutdown).await {
                break;
            }
        }
    }
    Ok(jobs)
}

/// Most commands sent to beanstalkd in one write (`reserve-with-timeout 0` while gathering,
/// `delete` after a commit): one round trip instead of one per job, small enough for the
/// socket buffers to hold the commands while the replies wait to be read.
const PIPELINE: usize = 64;

/// Ids of `queued` events a writer task remembers having stored (about 5 MB at most).
const RECENT_IDS: usize = 65_536;

/// The ids of the submitted messages' `queued` events (`queued-<queue id>`) this task stored
/// last, at most `capacity` (the oldest forgotten first). Every such event comes twice, from
/// the post office and again from the worker's first attempt (docs/ledger.md), usually
/// seconds apart: the second copy is dropped here instead of being encoded, bound and
/// refused by the store's `ON CONFLICT` (which keeps the first copy anyway). Other ids are
/// unique and not kept. An id forgotten, or a copy that reaches another writer, goes to the
/// store as before: this only saves work.
struct Recent {
    capacity: usize,
    order: std::collections::VecDeque<Arc<str>>,
    ids: std::collections::HashSet<Arc<str>>,
}

impl Recent {
    fn new(capacity: usize) -> Recent {
        Recent {
            capacity,
            order: std::collections::VecDeque::new(),
            ids: std::collections::HashSet::new(),
        }
    }

    fn clear(&mut self) {
        self.order.clear();
        self.ids.clear();
    }

    fn contains(&self, id: &str) -> bool {
        id.starts_with(QUEUED_ID_PREFIX) && self.ids.contains(id)
    }

    fn remember<'a>(&mut self, ids: impl Iterator<Item = &'a str>) {
        for id in ids.filter(|id| id.starts_with(QUEUED_ID_PREFIX)) {
            if self.ids.contains(id) {
                continue;
            }
            if self.order.len() == self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
            let id: Arc<str> = Arc::from(id);
            self.order.push_back(id.clone());
            self.ids.insert(id);
        }
    }
}

/// Events in a job, counted from its body (`"kind":` appears once per event).
fn estimate(job: &Job) -> usize {
    let needle = b"\"kind\":";
    job.body
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_last_queued_ids_only() {
        let mut recent = Recent::new(2);
        recent.remember(["queued-A", "0123abcd", "queued-B"].into_iter());
        assert!(recent.contains("queued-A") && recent.contains("queued-B"));
        // Random ids are never kept: each comes once.
        assert!(!recent.contains("0123abcd"));
        recent.remember(["queued-B", "queued-C"].into_iter());
        assert!(!recent.contains("queued-A"), "the oldest is forgotten");
        assert!(recent.contains("queued-B") && recent.contains("queued-C"));
        assert_eq!((recent.order.len(), recent.ids.len()), (2, 2));
    }
}
