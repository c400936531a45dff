//! [`Emitter`]: puts ledger events into the events tube of one beanstalkd server, with group
//! commit.
//!
//! Callers `emit(events).await`. The events are encoded in the caller's task; one task per
//! emitter gathers every call waiting for it into as few jobs as it can
//! ([`Batch`](crate::event::Batch) bodies of at most [`Limits::max_events`] events and
//! [`Limits::max_bytes`] bytes, below beanstalkd's default `max-job-size` of 65,535 bytes)
//! and puts them one after the other on one connection. While one put is on the wire the
//! next calls queue up, so under load one put carries many messages' events and the cost per
//! message is a share of one round trip; when idle, a call is put at once (no waiting for
//! company).
//!
//! `emit` returns when beanstalkd has the job, so a caller that emits before it deletes or
//! acknowledges its own job records the event at least once (an event put twice is harmless:
//! its id is unique). An event too large for a batch on its own goes alone in a job of its
//! own (the post office's servers take jobs as large as a message).
//!
//! Failure never stops mail: when beanstalkd does not take the events, `emit` returns an
//! error and the caller carries on, and the events wait in the emitter's backlog (in memory,
//! at most [`Limits::backlog_bytes`]) and are put, oldest first, as soon as the server takes
//! jobs again: before the next call's events, or every [`Limits::backlog_retry`] when no call
//! comes. So a worker that deletes its job while beanstalkd restarts (the delete reaching the
//! new server, the events put having failed on the old connection) still records the
//! attempt. Events are lost only when the backlog overflows (the oldest go first) or the
//! process ends with a backlog it cannot put within [`Limits::io_timeout`]; both are counted
//! ([`Emitter::events_dropped`]) and logged. After a connect or put that timed out (a server
//! that does not answer) the emitter fails calls at once for [`Limits::retry_after`] instead
//! of making every message wait for it, then tries again; a refused connection costs nothing
//! to retry, so every call tries (the client reconnects by itself). [`Emitter::record`] is
//! `emit` plus the logging callers want: one warning when an outage starts, one line when it
//! ends (with how many events were dropped), nothing per message.
//!
//! Not here: the event format ([`crate::event`]), reading the tube (the ledger writer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use beanstalk::{Client, Error as BeanstalkError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::event::{Event, VERSION};
use crate::tubes::Tubes;

/// Bounds of one events job and the emitter's timeouts. `Limits::default()` suits hedwig.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most events in one job.
    pub max_events: usize,
    /// Most bytes in one job (one event larger than this goes alone).
    pub max_bytes: usize,
    /// Limit on connecting to beanstalkd.
    pub connect_timeout: Duration,
    /// Limit on each put.
    pub io_timeout: Duration,
    /// After a connect or put that timed out, calls fail at once for this long.
    pub retry_after: Duration,
    /// Priority of events jobs.
    pub priority: u32,
    /// Time-to-run of events jobs (the ledger writer's time to store a batch).
    pub ttr: Duration,
    /// Calls waiting for the emitter's task at most; more wait to be queued.
    pub queue: usize,
    /// Most bytes of events kept in memory while beanstalkd does not take them.
    pub backlog_bytes: usize,
    /// How often a backlog is tried again when no call comes.
    pub backlog_retry: Duration,
}

/// Default [`Limits::max_bytes`]: below beanstalkd's default `max-job-size` (65,535).
pub const MAX_BATCH_BYTES: usize = 60_000;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_events: 1_000,
            max_bytes: MAX_BATCH_BYTES,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            priority: 1024,
            ttr: Duration::from_secs(120),
            queue: 10_000,
            backlog_bytes: 64 << 20,
            backlog_retry: Duration::from_secs(1),
        }
    }
}

/// Why events were not queued now (they wait in the backlog unless it overflows).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmitError {
    /// beanstalkd did not take the job (the events may or may not be queued after a lost
    /// reply; a second copy would be harmless).
    #[error("beanstalkd at {addr} did not take the events: {reason}")]
    Put { addr: String, reason: String },
    /// A connect or put timed out less than [`Limits::retry_after`] ago; not tried.
    #[error("beanstalkd at {addr} is unreachable (retrying shortly): {reason}")]
    Down { addr: String, reason: String },
    /// The emitter's task is gone (the runtime is shutting down).
    #[error("the events emitter for {addr} has stopped")]
    Stopped { addr: String },
}

/// One call waiting for the emitter's task: its events, each already encoded as JSON.
struct Request {
    events: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<(), EmitError>>,
}

/// Puts events into the events tube of one beanstalkd server. Cheap to clone (one shared
/// task and connection). The task starts on the first call (inside a tokio runtime) and ends
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Emitter {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    tube: String,
    limits: Limits,
    sender: OnceLock<mpsc::Sender<Request>>,
    /// Jobs and events put so far.
    jobs: AtomicU64,
    events: AtomicU64,
    /// An outage is on (for [`Emitter::record`]'s logging).
    failing: AtomicBool,
    /// Events dropped for good (backlog overflow, or left at the end), ever.
    dropped: AtomicU64,
    /// Events in the backlog now.
    backlog: AtomicU64,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("addr", &self.inner.addr)
            .field("tube", &self.inner.tube)
            .finish()
    }
}

impl Emitter {
    /// An emitter for the events tube of `tubes` at `addr` (`host:port`), with default limits.
    pub fn new(addr: impl Into<String>, tubes: &Tubes) -> Emitter {
        Emitter::with_limits(addr, tubes, Limits::default())
    }

    /// Like [`Emitter::new`] with `limits`.
    pub fn with_limits(addr: impl Into<String>, tubes: &Tubes, limits: Limits) -> Emitter {
        Emitter {
            inner: Arc::new(Inner {
                addr: addr.into(),
                tube: tubes.events().to_owned(),
                limits,
                sender: OnceLock::new(),
                jobs: AtomicU64::new(0),
                events: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
                backlog: AtomicU64::new(0),
            }),
        }
    }

    /// The server this emitter puts to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Jobs put so far (each a batch of events).
    pub fn jobs_put(&self) -> u64 {
        self.inner.jobs.load(Ordering::Relaxed)
    }

    /// Events put so far.
    pub fn events_put(&self) -> u64 {
        self.inner.events.load(Ordering::Relaxed)
    }

    /// Events dropped for good so far: the backlog overflowed, or the emitter ended with a
    /// backlog it could not put.
    pub fn events_dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Events waiting in the backlog now.
    pub fn backlog(&self) -> u64 {
        self.inner.backlog.load(Ordering::Relaxed)
    }

    /// Queues `events`; returns when beanstalkd has them, or when it did not take them
    /// (`Err`: they wait in the backlog). Nothing to do for an empty list.
    pub async fn emit(&self, events: Vec<Event>) -> Result<(), EmitError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.iter().map(encode_event).collect();
        let (done, answer) = oneshot::channel();
        let stopped = || EmitError::Stopped {
            addr: self.inner.addr.clone(),
        };
        self.sender()
            .send(Request { events, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// [`emit`](Self::emit), logging a failure once per outage: a warning when the first call
    /// fails, an info line when a call succeeds again (with the events dropped meanwhile, if
    /// any). Returns whether the events were queued now. For callers that carry on either way
    /// (the ledger never stops mail).
    pub async fn record(&self, events: Vec<Event>) -> bool {
        match self.emit(events).await {
            Ok(()) => {
                if self.inner.failing.swap(false, Ordering::Relaxed) {
                    let dropped = self.events_dropped();
                    tracing::info!(
                        beanstalkd = %self.inner.addr, dropped_ever = dropped,
                        "ledger events are queued again; the backlog was put"
                    );
                }
                true
            }
            Err(e) => {
                if !self.inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        beanstalkd = %self.inner.addr, error = %e,
                        backlog_bytes = self.inner.limits.backlog_bytes,
                        "ledger events cannot be queued now; they wait in memory and are put when \
                         beanstalkd takes jobs again; mail carries on (logged once until it recovers)"
                    );
                }
                false
            }
        }
    }

    fn sender(&self) -> &mpsc::Sender<Request> {
        self.inner.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.inner.limits.queue.max(1));
            // The task holds a weak handle only: it ends when every Emitter is dropped (the
            // channel closes), not kept alive by itself.
            let task = Task {
                addr: self.inner.addr.clone(),
                tube: self.inner.tube.clone(),
                limits: self.inner.limits.clone(),
                counters: Arc::downgrade(&self.inner),
                client: None,
                down: None,
                backlog: std::collections::VecDeque::new(),
                backlog_bytes: 0,
                last_error: String::new(),
            };
            tokio::spawn(task.run(rx));
            tx
        })
    }
}

/// One event as JSON.
fn encode_event(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_else(|_| unreachable!("Event serializes to JSON"))
}

/// `{"v":1,"events":[` ... `]}` around encoded events.
fn batch_body(events: &[&[u8]]) -> Vec<u8> {
    let head = format!("{{\"v\":{VERSION},\"events\":[");
    let len = head.len() + 2 + events.iter().map(|e| e.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(head.as_bytes());
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Bytes of a batch body around its events, with no event (see [`batch_body`]).
const BATCH_OVERHEAD: usize = 20;

/// Splits encoded events into job bodies of at most `max_events` events and `max_bytes`
/// bytes (an event larger than that alone), in order. Each body is a [`crate::event::Batch`].
pub fn pack(events: &[Vec<u8>], max_events: usize, max_bytes: usize) -> Vec<Vec<u8>> {
    pack_ranges(events, max_events, max_bytes)
        .into_iter()
        .map(|range| {
            let slices: Vec<&[u8]> = events[range].iter().map(Vec::as_slice).collect();
            batch_body(&slices)
        })
        .collect()
}

/// The index ranges of [`pack`]'s bodies.
fn pack_ranges(
    events: &[Vec<u8>],
    max_events: usize,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let max_events = max_events.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = BATCH_OVERHEAD;
    for (i, event) in events.iter().enumerate() {
        let add = event.len() + 1;
        let count = i - start;
        if count > 0 && (count >= max_events || bytes + add > max_bytes) {
            ranges.push(start..i);
            start = i;
            bytes = BATCH_OVERHEAD;
        }
        bytes += add;
    }
    if start < events.len() {
        ranges.push(start..events.len());
    }
    ranges
}

/// Encodes `events` into job bodies as the emitter would (for callers that put them through
/// a connection of their own, like the admin commands).
pub fn encode_batches(events: &[Event], limits: &Limits) -> Vec<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = events.iter().map(encode_event).collect();
    pack(&encoded, limits.max_events, limits.max_bytes)
}

/// The emitter's task: gathers the waiting calls, puts their events, answers them.
struct Task {
    addr: String,
    tube: String,
    limits: Limits,
    counters: std::sync::Weak<Inner>,
    client: Option<Client>,
    /// Until when calls fail at once, and why.
    down: Option<(Instant, String)>,
    /// Events not yet put, oldest first, and their bytes.
    backlog: std::collections::VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    /// Why the last put failed (for the calls answered from the backlog).
    last_error: String,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        // Most calls gathered into one round: a bound on the memory one round holds.
        let most = self.limits.max_events.max(1) * 8;
        loop {
            let next = if self.backlog.is_empty() {
                rx.recv().await
            } else {
                tokio::select! {
                    next = rx.recv() => next,
                    () = tokio::time::sleep(self.limits.backlog_retry) => {
                        self.flush().await;
                        continue;
                    }
                }
            };
            let Some(first) = next else { break };
            let mut group = vec![first];
            let mut events = group[0].events.len();
            while events < most {
                match rx.try_recv() {
                    Ok(request) => {
                        events += request.events.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.round(group).await;
        }
        // Every emitter is gone (the process is ending): one last try, then count the rest.
        if !self.backlog.is_empty() {
            self.down = None;
            self.flush().await;
            let left = self.backlog.len() as u64;
            if left > 0 {
                self.drop_events(left);
                tracing::error!(
                    beanstalkd = %self.addr, dropped = left, error = %self.last_error,
                    "ledger events dropped at exit: beanstalkd did not take the backlog"
                );
            }
        }
    }

    /// Counts `n` events dropped for good.
    fn drop_events(&self, n: u64) {
        if let Some(inner) = self.counters.upgrade() {
            inner.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn count_put(&self, events: usize) {
        if let Some(inner) = self.counters.upgrade() {
            inner.jobs.fetch_add(1, Ordering::Relaxed);
            inner.events.fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    fn count_backlog(&self) {
        if let Some(inner) = self.counters.upgrade() {
            inner
                .backlog
                .store(self.backlog.len() as u64, Ordering::Relaxed);
        }
    }

    /// Adds events to the end of the backlog; the oldest go when it is over its bound.
    fn keep(&mut self, events: impl IntoIterator<Item = Vec<u8>>) {
        let mut dropped = 0u64;
        for event in events {
            self.backlog_bytes += event.len();
            self.backlog.push_back(event);
        }
        while self.backlog_bytes > self.limits.backlog_bytes {
            let Some(old) = self.backlog.pop_front() else {
                break;
            };
            self.backlog_bytes -= old.len();
            dropped += 1;
        }
        if dropped > 0 {
            self.drop_events(dropped);
            tracing::error!(
                beanstalkd = %self.addr, dropped, backlog_bytes = self.limits.backlog_bytes,
                "ledger events dropped: the backlog is full while beanstalkd does not take jobs"
            );
        }
        self.count_backlog();
    }

    /// Puts the backlog, oldest first, until it is empty or a put fails. Returns whether it
    /// is empty.
    async fn flush(&mut self) -> bool {
        if self.backlog.is_empty() {
            return true;
        }
        if let Some((until, _)) = &self.down {
            if Instant::now() < *until {
                return false;
            }
            self.down = None;
        }
        let all: Vec<Vec<u8>> = self.backlog.drain(..).collect();
        self.backlog_bytes = 0;
        let mut failed_at = None;
        for range in pack_ranges(&all, self.limits.max_events, self.limits.max_bytes) {
            let slices: Vec<&[u8]> = all[range.clone()].iter().map(Vec::as_slice).collect();
            let body = batch_body(&slices);
            match self.put(&body).await {
                Ok(()) => self.count_put(range.len()),
                Err(_) => {
                    failed_at = Some(range.start);
                    break;
                }
            }
        }
        let put = failed_at.unwrap_or(all.len());
        if put > 0 {
            tracing::info!(
                beanstalkd = %self.addr, events = put, left = all.len() - put,
                "ledger events from the backlog put"
            );
        }
        if let Some(start) = failed_at {
            let rest = all.into_iter().skip(start);
            // Put back without dropping: these were within the bound already.
            for event in rest {
                self.backlog_bytes += event.len();
                self.backlog.push_back(event);
            }
        }
        self.count_backlog();
        self.backlog.is_empty()
    }

    /// Puts the events of `group` in as few jobs as the limits allow and answers each call:
    /// `Ok` when every job holding one of its events was put.
    async fn round(&mut self, group: Vec<Request>) {
        if self
            .down
            .as_ref()
            .is_some_and(|(until, _)| Instant::now() >= *until)
        {
            self.down = None;
        }
        // The backlog goes first (the ledger keeps the order of one server's events); while it
        // cannot be put, this round's events join it.
        let behind = !self.flush().await;
        // Which call each event belongs to, then the events in one list.
        let mut owner = Vec::new();
        let mut all = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        for (i, request) in group.into_iter().enumerate() {
            owner.extend(std::iter::repeat_n(i, request.events.len()));
            all.extend(request.events);
            answers.push((request.done, None::<EmitError>));
        }
        for range in pack_ranges(&all, self.limits.max_events, self.limits.max_bytes) {
            let slices: Vec<&[u8]> = all[range.clone()].iter().map(Vec::as_slice).collect();
            let body = batch_body(&slices);
            let result = match &self.down {
                Some((_, reason)) => Err(EmitError::Down {
                    addr: self.addr.clone(),
                    reason: reason.clone(),
                }),
                None if behind || !self.backlog.is_empty() => Err(EmitError::Put {
                    addr: self.addr.clone(),
                    reason: format!("waiting behind the backlog: {}", self.last_error),
                }),
                None => self.put(&body).await,
            };
            match result {
                Ok(()) => self.count_put(range.len()),
                Err(e) => {
                    for &i in &owner[range.clone()] {
                        answers[i].1.get_or_insert_with(|| e.clone());
                    }
                    let events: Vec<Vec<u8>> = all[range].to_vec();
                    self.keep(events);
                }
            }
        }
        for (done, error) in answers {
            let _ = done.send(error.map_or(Ok(()), Err));
        }
    }

    /// One put; after a timeout the emitter is down for `retry_after`.
    async fn put(&mut self, body: &[u8]) -> Result<(), EmitError> {
        let result = async {
            if self.client.is_none() {
                let config = beanstalk::Config {
                    connect_timeout: self.limits.connect_timeout,
                    io_timeout: Some(self.limits.io_timeout),
                    ..beanstalk::Config::default()
                };
                let mut client = Client::connect_with(self.addr.clone(), config).await?;
                client.use_tube(&self.tube).await?;
                self.client = Some(client);
            }
            let Some(client) = self.client.as_mut() else {
                return Err(BeanstalkError::Protocol("no connection".into()));
            };
            client
                .put(body, self.limits.priority, Duration::ZERO, self.limits.ttr)
                .await
        }
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let reason = e.to_string();
                self.last_error.clone_from(&reason);
                // Only a server that does not answer makes callers wait (up to the timeout):
                // then fail fast for a while. A refused connection fails at once anyway, so
                // every call tries, and the first after the server's return succeeds.
                if matches!(e, BeanstalkError::Timeout(_)) {
                    self.down = Some((Instant::now() + self.limits.retry_after, reason.clone()));
                }
                Err(EmitError::Put {
                    addr: self.addr.clone(),
                    reason,
                })
            }
        }
    }
}

/// One [`Emitter`] per beanstalkd server, by address: a tier emits each message's events to
/// the server its job is on.
#[derive(Debug, Clone, Default)]
pub struct Emitters {
    by_addr: HashMap<String, Emitter>,
}

impl Emitters {
    /// An emitter for each of `addrs`.
    pub fn new<'a>(addrs: impl IntoIterator<Item = &'a str>, tubes: &Tubes) -> Emitters {
        Emitters::with_limits(addrs, tubes, Limits::default())
    }

    /// Like [`Emitters::new`] with `limits`.
    pub fn with_limits<'a>(
        addrs: impl IntoIterator<Item = &'a str>,
        tubes: &Tubes,
        limits: Limits,
    ) -> Emitters {
        Emitters {
            by_addr: addrs
                .into_iter()
                .map(|addr| {
                    (
                        addr.to_owned(),
                        Emitter::with_limits(addr, tubes, limits.clone()),
                    )
                })
                .collect(),
        }
    }

    /// The emitter of the server at `addr`, if it is one of ours.
    pub fn get(&self, addr: &str) -> Option<&Emitter> {
        self.by_addr.get(addr)
    }

    /// Events waiting in the backlogs now, all servers.
    pub fn backlog(&self) -> u64 {
        self.by_addr.values().map(Emitter::backlog).sum()
    }

    /// Events dropped for good so far, all servers.
    pub fn events_dropped(&self) -> u64 {
        self.by_addr.values().map(Emitter::events_dropped).sum()
    }

    /// Waits until every emitter's backlog is put, at most `limit`; returns the events still
    /// waiting (a process calls this before it exits: what is left then is lost, and said).
    pub async fn drain(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let left: u64 = self.by_addr.values().map(Emitter::backlog).sum();
            if left == 0 || Instant::now() >= deadline {
                if left > 0 {
                    tracing::error!(
                        events = left,
                        "ledger events still waiting for beanstalkd at exit; they are lost"
                    );
                }
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Emitter::record`] on the server at `addr`; false (nothing logged) for an unknown one.
    pub async fn record(&self, addr: &str, events: Vec<Event>) -> bool {
        match self.get(addr) {
            Some(emitter) => emitter.record(events).await,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Batch, Outcome, RecipientEvent, What};

    fn event(reply_len: usize) -> Event {
        Event::now(
            "Q1",
            What::Recipient(RecipientEvent {
                recipient: "a@b.test".into(),
                outcome: Outcome::Sent,
                mx: None,
                ip: None,
                tls: None,
                code: Some(250),
                dsn: None,
                reply: "x".repeat(reply_len),
                attempt: Some(1),
                by: None,
                list_id: None,
                source_ip: None,
                pool: None,
                sender_domain: None,
            }),
        )
    }

    #[test]
    fn bodies_are_batches_within_the_limits() {
        let events: Vec<Event> = (0..500).map(|i| event(100 + i % 7)).collect();
        let limits = Limits {
            max_events: 100,
            max_bytes: 8_000,
            ..Limits::default()
        };
        let bodies = encode_batches(&events, &limits);
        assert!(bodies.len() > 5, "{}", bodies.len());
        let mut back = Vec::new();
        for body in &bodies {
            assert!(body.len() <= 8_000, "{}", body.len());
            let batch = Batch::decode(body).unwrap();
            assert!(batch.events.len() <= 100);
            back.extend(batch.events);
        }
        assert_eq!(back, events, "every event once, in order");
    }

    #[test]
    fn the_overhead_is_what_an_empty_batch_costs() {
        assert!(batch_body(&[]).len() <= BATCH_OVERHEAD);
        assert_eq!(
            batch_body(&[]),
            serde_json::to_vec(&Batch::new(vec![])).unwrap()
        );
        let e = event(3);
        assert_eq!(
            Batch::decode(&batch_body(&[&encode_event(&e)])).unwrap(),
            Batch::new(vec![e])
        );
    }

    #[test]
    fn an_oversized_event_goes_alone() {
        let events = vec![event(10), event(70_000), event(10)];
        let bodies = encode_batches(&events, &Limits::default());
        assert_eq!(bodies.len(), 3);
        assert!(bodies[1].len() > 70_000);
        assert!(bodies[0].len() < 1_000 && bodies[2].len() < 1_000);
        assert!(encode_batches(&[], &Limits::default()).is_empty());
    }
}
