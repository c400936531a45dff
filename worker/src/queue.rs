//! The queue loop: reserve a job, have it delivered, record the outcome, then delete it.
//! The delivery attempt itself (loop check, line fixing, DKIM signing, recipients by domain)
//! is [`crate::attempt`]'s; what becomes of the job after it is [`crate::plan`]'s.
//!
//! Each of the `concurrency` tasks owns two beanstalkd connections: one reserves from the
//! outbound tube (a reserved job belongs to the connection that reserved it, so touch and
//! delete go through it too), one puts (retries, failed records, bounces). While a delivery
//! runs, the job is touched at half its TTR, so a slow server does not make beanstalkd hand the
//! job to another worker. The job is deleted only after everything its [`Plan`] asks for was
//! put; if a put fails the job is left reserved and comes back after its TTR (a retry, never a
//! loss).
//!
//! The duplicate windows: a worker killed after the remote server's 250 but before the delete
//! (or a beanstalkd killed then, since the delete follows the ledger's events put to it) sends
//! that message again when the job comes back. SMTP has no way to close it (RFC 1047).
//! A worker killed after putting a deferral's retry job but before deleting the reserved job
//! leaves two jobs of the message, each delivered once (put-then-delete never loses one).
//!
//! The queue schema (tube names from `tube_prefix`, the job format, the hold list and its
//! cache) is the `hedwig-queue` crate's; this module only moves jobs between tubes.
//!
//! The ledger: after each attempt (and when a held host's job is set aside) the worker puts
//! the events of [`crate::ledger`] into the events tube of the job's server, before it deletes
//! the job; when they cannot be put, it logs that once per outage and carries on.
//!
//! One log line per recipient per attempt, in the style of Postfix:
//! `Q1: to=<a@example.com>, relay=mx[192.0.2.1]:25, delay=1.2, dsn=2.0.0, status=sent (250 ok)`.
//! Through an IP pool, `pool=<name>, source=<local address>,` follow the relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beanstalk::Client;
use hedwig_core::address::Recipient;
use hedwig_core::unix_now;
use hedwig_message::dkim::Signer;
use hedwig_queue::emit::Emitters;
use hedwig_queue::event::Event;
use hedwig_queue::hold::Snapshot;
use hedwig_queue::job::Job;
use hedwig_queue::Tubes;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deliver::Deliverer;
use crate::metrics::{Counter, MessageCounter, Metrics};
use crate::plan::{plan, Outcome, Plan, Status};

/// Priority of the jobs this worker puts (beanstalkd's usual default).
const PRIORITY: u32 = 1024;
/// How long one `reserve-with-timeout` waits before checking for shutdown.
const RESERVE_WAIT: Duration = Duration::from_secs(1);

/// What every delivery task shares.
pub struct Worker {
    pub config: Arc<Config>,
    /// Each lane's retry schedule, lifetime and retry priority.
    pub lanes: crate::lanes::Lanes,
    /// The tube names (`tube_prefix`).
    pub tubes: Tubes,
    pub deliverer: Arc<Deliverer>,
    pub signer: Option<Arc<Signer>>,
    pub metrics: Arc<Metrics>,
    /// Bounces per envelope sender per interval.
    pub bounce_limiter: crate::bounce_limit::SenderLimiter,
    /// The ledger's events tube on each server; `None` with `events: false`.
    pub events: Option<Emitters>,
    /// VERP return paths per sender domain; `None` when off.
    pub verp: Option<Arc<crate::verp::Verp>>,
    /// One-click unsubscribe links for bulk hosts; `None` when off.
    pub unsubscribe: Option<Arc<crate::unsubscribe::Unsubscriber>>,
}

impl Worker {
    /// One delivery task: runs until `shutdown`, then finishes (or, after the grace period,
    /// hands back) its job.
    pub async fn task(self: Arc<Self>, n: usize, shutdown: CancellationToken) {
        // With several beanstalkd servers, tasks are spread over them round-robin; a job's
        // retries, failed records and bounces go back to the server it came from.
        let servers = &self.config.beanstalkd;
        let addr = servers
            .get(n % servers.len().max(1))
            .cloned()
            .unwrap_or_default();
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let clients = tokio::select! {
                c = connect(&addr, &self.tubes) => c,
                _ = shutdown.cancelled() => break,
            };
            let (mut reserver, mut putter) = match clients {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(task = n, "beanstalkd {addr}: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let mut holds = Snapshot::default();
            while !shutdown.is_cancelled() {
                let reserved = tokio::select! {
                    r = reserver.reserve_with_timeout(RESERVE_WAIT) => r,
                    _ = shutdown.cancelled() => break,
                };
                match reserved {
                    Ok(job) => {
                        self.process(&mut reserver, &mut putter, &mut holds, job, &shutdown)
                            .await
                    }
                    Err(beanstalk::Error::TimedOut) => {}
                    Err(beanstalk::Error::DeadlineSoon) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) if e.is_connection_error() => {
                        tracing::warn!(task = n, "beanstalkd reserve: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                    Err(e) => tracing::warn!(task = n, "beanstalkd reserve: {e}"),
                }
            }
        }
    }

    async fn process(
        &self,
        reserver: &mut Client,
        putter: &mut Client,
        holds: &mut Snapshot,
        reserved: beanstalk::Job,
        shutdown: &CancellationToken,
    ) {
        let id = reserved.id;
        let job = match Job::decode(&reserved.body) {
            Ok(job) => job,
            Err(e) => {
                // Not ours to fix: keep it buried for an operator, never lose it.
                tracing::error!(job = id, "undecodable job buried: {e}");
                self.metrics.incr(Counter::BadJob);
                if let Err(e) = reserver.bury(id, PRIORITY).await {
                    tracing::error!(job = id, "bury failed: {e}");
                }
                return;
            }
        };
        if holds.is_held(putter, &self.tubes, &job.envelope.host).await {
            self.hold(reserver, putter, &job, &reserved).await;
            return;
        }
        let attempt = self.attempt(&job);
        let Some(outcomes) = self.touching(reserver, id, attempt, shutdown).await else {
            tracing::info!(queue_id = %job.envelope.queue_id, "shutting down: job handed back");
            if let Err(e) = reserver.release(id, PRIORITY, Duration::ZERO).await {
                tracing::warn!(job = id, "release failed (it returns after its TTR): {e}");
            }
            return;
        };
        let now = unix_now();
        // The events' time: the attempt's end, before the bounce (if any) is put, so that a
        // bounce delivered at once never precedes its own `queued` event in the ledger.
        let attempt_end = hedwig_queue::event::now_millis();
        let env = &job.envelope;
        let return_path = self.config.return_path.apply(&env.host, &env.mail_from);
        let lane = self.lanes.of(env);
        let plan = plan(
            &job,
            &outcomes,
            now,
            &lane.retry,
            self.config.bounces,
            return_path,
        );
        log_attempt(&job, &plan, now, &lane.name);
        let recorded = self.record(putter, &job, &plan, now, lane).await;
        // The attempt happened whether or not its outcome could be recorded in beanstalkd:
        // its events go to the ledger either way, before the job is deleted.
        if self.events.is_some() {
            let mut events = crate::ledger::attempt_events(&job, &plan);
            if let Ok(Some(bounce)) = &recorded {
                events.extend(crate::ledger::bounce_events(
                    &job,
                    &plan,
                    bounce,
                    self.lanes.of(&bounce.envelope).retry.max_lifetime,
                ));
            }
            for event in &mut events {
                event.at = attempt_end;
            }
            // The job's first attempt says again that it was queued (same event id as the
            // post office's: the store keeps one), in case the post office's events put never
            // reached beanstalkd (killed between its put and its events put).
            if env.history.is_empty() && env.kind == hedwig_queue::job::Kind::Message {
                events.insert(
                    0,
                    hedwig_queue::event::queued_event(
                        env,
                        &job.message,
                        false,
                        env.received_at.saturating_mul(1000),
                    ),
                );
            }
            self.emit(reserver.addr(), events).await;
        }
        match recorded {
            Ok(_) => {
                if let Err(e) = reserver.delete(id).await {
                    tracing::error!(job = id, queue_id = %env.queue_id, "delete failed, the job will be delivered again: {e}");
                }
            }
            Err(e) => tracing::error!(
                job = id,
                queue_id = %env.queue_id,
                "recording the outcome failed, the job stays reserved and comes back after its TTR: {e}"
            ),
        }
    }

    /// Moves the job of a held host into the held tube untouched (put first, then delete: a
    /// crash in between leaves it in both, never in neither). `postoffice release HOST` moves
    /// it back.
    async fn hold(
        &self,
        reserver: &mut Client,
        putter: &mut Client,
        job: &Job,
        reserved: &beanstalk::Job,
    ) {
        let env = &job.envelope;
        let held = self.tubes.held();
        match put(
            putter,
            held,
            &reserved.body,
            Duration::ZERO,
            self.config.job_ttr,
        )
        .await
        {
            Ok(_) => {
                tracing::info!(
                    queue_id = %env.queue_id, host = %env.host, from = %env.mail_from,
                    to = %env.rcpt_to.join(","), outcome = "held",
                    app = env.app.as_ref().map_or("-", |a| a.name.as_str()),
                    "{}: host {} is held; message moved to {held}", env.queue_id, env.host
                );
                if self.events.is_some() {
                    let events = crate::ledger::held_events(job, held);
                    self.emit(reserver.addr(), events).await;
                }
                if let Err(e) = reserver.delete(reserved.id).await {
                    tracing::error!(job = reserved.id, queue_id = %env.queue_id, "delete after hold failed: {e}");
                }
            }
            Err(e) => tracing::error!(
                job = reserved.id, queue_id = %env.queue_id,
                "moving a held host's job failed, it comes back after its TTR: {e}"
            ),
        }
    }

    /// Runs `attempt`, touching job `id` so its TTR does not run out. `None` when shutdown
    /// came and the grace period passed before the attempt finished.
    async fn touching<F>(
        &self,
        reserver: &mut Client,
        id: u64,
        attempt: F,
        shutdown: &CancellationToken,
    ) -> Option<Vec<(Recipient, Outcome)>>
    where
        F: std::future::Future<Output = Vec<(Recipient, Outcome)>>,
    {
        let mut attempt = std::pin::pin!(attempt);
        let mut next_touch = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut every: Option<Duration> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let give_up = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcomes = &mut attempt => return Some(outcomes),
                _ = tokio::time::sleep_until(next_touch) => {
                    let interval = match every {
                        Some(i) => i,
                        None => {
                            let ttr = reserver
                                .stats_job(id)
                                .await
                                .ok()
                                .and_then(|s| s.get_u64("ttr"))
                                .unwrap_or(60);
                            let i = Duration::from_millis(ttr.saturating_mul(1000) / 2)
                                .max(Duration::from_millis(500));
                            every = Some(i);
                            i
                        }
                    };
                    if let Err(e) = reserver.touch(id).await {
                        tracing::warn!(job = id, "touch failed: {e}");
                    }
                    next_touch = tokio::time::Instant::now() + interval;
                }
                _ = shutdown.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + self.config.shutdown_grace);
                }
                _ = give_up => return None,
            }
        }
    }

    /// Puts `events` into the events tube of the server at `addr` (the job's); a failure is
    /// logged once per outage and otherwise ignored: the ledger never stops delivery.
    async fn emit(&self, addr: &str, events: Vec<Event>) {
        if let Some(emitters) = &self.events {
            emitters.record(addr, events).await;
        }
    }

    /// Puts what the plan asks for: the retry, the failed records, the bounce. Returns the
    /// bounce, when one was queued.
    async fn record(
        &self,
        putter: &mut Client,
        job: &Job,
        plan: &Plan,
        now: u64,
        lane: &crate::lanes::Resolved,
    ) -> Result<Option<Job>, beanstalk::Error> {
        let ttr = self.config.job_ttr;
        if let Some((again, delay)) = &plan.retry {
            let (tube, pri) = (self.tubes.outbound(), lane.retry_priority);
            put_at(putter, tube, &again.encode(), pri, *delay, ttr).await?;
            self.metrics
                .count(MessageCounter::Retry, &job.envelope.host);
        }
        for failed in &plan.failed {
            put(
                putter,
                self.tubes.failed(),
                &failed.encode(),
                Duration::ZERO,
                ttr,
            )
            .await?;
            self.metrics
                .count(MessageCounter::Failed, &job.envelope.host);
        }
        // Over the sender's bounce limit, the failed-tube records above hold everything;
        // only the bounce is left out.
        let mut queued = None;
        if !plan.bounce.is_empty() && self.bounce_allowed(job, plan) {
            match self.bounce(job, plan, now) {
                Ok(bounce) => {
                    // In the default lane (a bounce has none), at its base priority.
                    let outbound = self.tubes.outbound();
                    let pri = self
                        .config
                        .lanes
                        .get(&self.config.default_lane)
                        .map_or(crate::lanes::DEFAULT_PRIORITY, |l| {
                            l.base(crate::lanes::DEFAULT_PRIORITY)
                        });
                    put_at(putter, outbound, &bounce.encode(), pri, Duration::ZERO, ttr).await?;
                    self.metrics
                        .count(MessageCounter::Bounce, &job.envelope.host);
                    tracing::info!(
                        queue_id = %job.envelope.queue_id,
                        "{}: sender non-delivery notification: {}",
                        job.envelope.queue_id,
                        bounce.envelope.queue_id
                    );
                    queued = Some(bounce);
                }
                // The failed-tube record holds everything; a bounce that cannot be built
                // must not keep the job in the queue.
                Err(e) => tracing::error!(queue_id = %job.envelope.queue_id, "no bounce: {e}"),
            }
        }
        Ok(queued)
    }

    /// Whether the bounce's recipient is still within `bounce_limits.per_sender`; logs the
    /// first refusal of each sender's interval. A bounce to a configured `return_path` (the
    /// operator's own address, not one the poster chose) is not limited.
    fn bounce_allowed(&self, job: &Job, plan: &Plan) -> bool {
        use crate::bounce_limit::Verdict;
        let limits = &self.config.bounce_limits;
        if !plan
            .bounce_to
            .eq_ignore_ascii_case(job.envelope.mail_from.trim())
        {
            return true;
        }
        match self.bounce_limiter.check(&plan.bounce_to, Instant::now()) {
            Verdict::Send => true,
            Verdict::Refuse { first } => {
                self.metrics
                    .count(MessageCounter::BounceLimited, &job.envelope.host);
                let env = &job.envelope;
                if first {
                    tracing::warn!(
                        queue_id = %env.queue_id, host = %env.host, to = %plan.bounce_to,
                        "{}: no bounce to <{}>: it had its {} bounces in {:?}; failures are still \
                         recorded in {} (logged once per sender per interval)",
                        env.queue_id,
                        plan.bounce_to,
                        limits.per_sender,
                        limits.interval,
                        self.tubes.failed()
                    );
                } else {
                    tracing::debug!(queue_id = %env.queue_id, to = %plan.bounce_to, "no bounce: sender over its bounce limit");
                }
                false
            }
        }
    }

    fn bounce(&self, job: &Job, plan: &Plan, now: u64) -> Result<Job, hedwig_message::Error> {
        // The bounce goes where the remote servers' bounces go: the effective return path.
        let mut original = job.envelope.clone();
        original.mail_from = plan.bounce_to.clone();
        let params = hedwig_message::dsn::Params {
            hostname: self.config.ehlo_name(),
            from: None,
            original: &original,
            message: &job.message,
            failed: &plan.bounce,
            now,
            limits: self.config.bounce_limits.dsn(),
        };
        hedwig_message::dsn::bounce_job(&params, hedwig_core::new_queue_id())
    }
}

/// The two connections of a task: one reserving from the outbound tube (watching nothing
/// else), one putting (using the outbound tube until it puts elsewhere).
async fn connect(addr: &str, tubes: &Tubes) -> Result<(Client, Client), beanstalk::Error> {
    let mut reserver = Client::connect(addr).await?;
    reserver.watch(tubes.outbound()).await?;
    if tubes.outbound() != "default" {
        reserver.ignore("default").await?;
    }
    let mut putter = Client::connect(addr).await?;
    putter.use_tube(tubes.outbound()).await?;
    Ok((reserver, putter))
}

async fn put(
    client: &mut Client,
    tube: &str,
    body: &[u8],
    delay: Duration,
    ttr: Duration,
) -> Result<u64, beanstalk::Error> {
    put_at(client, tube, body, PRIORITY, delay, ttr).await
}

async fn put_at(
    client: &mut Client,
    tube: &str,
    body: &[u8],
    pri: u32,
    delay: Duration,
    ttr: Duration,
) -> Result<u64, beanstalk::Error> {
    if client.used_tube() != tube {
        client.use_tube(tube).await?;
    }
    client.put(body, pri, delay, ttr).await
}

/// One Postfix-style line per recipient.
fn log_attempt(job: &Job, plan: &Plan, now: u64, lane: &str) {
    let env = &job.envelope;
    let delay = now.saturating_sub(env.received_at);
    for (rcpt, o) in &plan.finals {
        let status = match o.status {
            Status::Delivered => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        };
        tracing::info!(
            target: "hedwig::delivery",
            queue_id = %env.queue_id,
            message_id = env.message_id.as_deref().unwrap_or("-"),
            host = %env.host,
            from = %env.mail_from,
            to = %rcpt,
            app = env.app.as_ref().map_or("-", |a| a.name.as_str()),
            lane = %lane,
            outcome = status,
            pool = o.pool.as_deref().unwrap_or("-"),
            "{}: to=<{}>, relay={},{} delay={}, dsn={}, status={} ({})",
            env.queue_id,
            rcpt,
            o.relay.as_deref().unwrap_or("none"),
            pool_text(o),
            delay,
            o.dsn,
            status,
            o.response
        );
    }
}

/// ` pool=<name>, source=<address>,` for an attempt through an IP pool (the source once a
/// connection was made), else nothing: the line of a relay without pools is as before.
fn pool_text(o: &crate::plan::Outcome) -> String {
    match (&o.pool, o.source) {
        (None, _) => String::new(),
        (Some(pool), None) => format!(" pool={pool},"),
        (Some(pool), Some(ip)) => format!(" pool={pool}, source={ip},"),
    }
}

/// Runs `n` delivery tasks until `shutdown`.
pub async fn run_tasks(worker: Arc<Worker>, n: usize, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    for i in 0..n {
        tracker.spawn(worker.clone().task(i, shutdown.clone()));
    }
    tracker.close();
    let started = Instant::now();
    tracker.wait().await;
    tracing::debug!("delivery tasks stopped after {:?}", started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn the_log_line_names_the_pool_and_source_only_with_pools() {
        let mut o = crate::plan::Outcome::failed(&Error::Local("x".into()), None);
        assert_eq!(pool_text(&o), "", "without pools the line is as before");
        o.pool = Some("bulk".into());
        assert_eq!(pool_text(&o), " pool=bulk,");
        o.source = "192.0.2.20".parse().ok();
        assert_eq!(pool_text(&o), " pool=bulk, source=192.0.2.20,");
    }
}
