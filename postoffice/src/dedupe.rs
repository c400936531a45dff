//! The duplicate-id window: a sender's message id, once queued, is answered with its first queue
//! id for a while instead of being queued again.
//!
//! mailman spools a message, posts it, and removes the spool file after the 200. A crash between
//! our 200 and that removal makes mailman post the message again on restart; the repeat finds its
//! id here. Two posts of one id at the same time are serialized: the second waits for the first
//! and then either reports its queue id or, if the first failed, queues the message itself.
//! The put and `Pending::complete` run in a task of their own (see `intake`), so a client that
//! goes away while beanstalkd takes the job cannot leave the id unrecorded.
//!
//! The window lives in this process's memory: a postoffice restart forgets it, and several
//! postoffices behind a load balancer do not share it (route by host to keep one host's
//! retries on one postoffice). Both are documented as the remaining duplicate window. With
//! `ledger.shared_dedupe` (on with PostgreSQL) a first sighting here is claimed in the
//! ledger store too ([`crate::ledger::claims`]), which the other post offices on that store
//! see; this window stays the fast path and the fallback while the store is down.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::ledger::claims::{Shared, SharedClaim, SharedWindow};

type Key = (String, String);

enum Entry {
    Pending(Arc<Notify>),
    Done(String),
}

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Completed keys, oldest first, for expiry.
    order: VecDeque<(Instant, Key)>,
}

/// Remembers queued message ids per host.
pub struct Dedupe {
    inner: Arc<Mutex<Inner>>,
    window: Duration,
    capacity: usize,
    /// The window in the ledger store, shared with the other post offices on it.
    shared: Option<Arc<SharedWindow>>,
}

/// The outcome of [`Dedupe::claim`].
pub enum Claim {
    /// First sighting: queue the message, then [`Pending::complete`] with its queue id.
    New(Pending),
    /// Already queued under this queue id.
    Seen(String),
}

/// A claimed id whose message is being queued. Dropping it without completing (queueing
/// failed) releases the id so that the sender's retry is queued.
pub struct Pending {
    inner: Arc<Mutex<Inner>>,
    key: Option<Key>,
    notify: Arc<Notify>,
    /// The claim in the shared window, when this post office won it there.
    shared: Option<SharedClaim>,
}

impl Dedupe {
    pub fn new(window: Duration, capacity: usize) -> Dedupe {
        Dedupe {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            })),
            window,
            capacity: capacity.max(1),
            shared: None,
        }
    }

    /// Also claims first sightings in `shared` (`ledger.shared_dedupe`).
    pub fn with_shared(mut self, shared: Option<Arc<SharedWindow>>) -> Dedupe {
        self.shared = shared;
        self
    }

    /// The shared window, when there is one.
    pub fn shared(&self) -> Option<&Arc<SharedWindow>> {
        self.shared.as_ref()
    }

    /// Claims `(host, id)`: here first, then, for a first sighting here, in the shared window.
    pub async fn claim(&self, host: &str, id: &str) -> Claim {
        let mut pending = match self.claim_here(host, id).await {
            Claim::New(pending) => pending,
            seen => return seen,
        };
        let Some(shared) = &self.shared else {
            return Claim::New(pending);
        };
        match shared.claim(host, id).await {
            Shared::Won(claim) => {
                pending.shared = Some(claim);
                Claim::New(pending)
            }
            Shared::Queued(queue_id) => {
                // Remembered here too: the next repeat is answered without the store.
                pending.complete_here(&queue_id);
                Claim::Seen(queue_id)
            }
            Shared::Unavailable(maybe) => {
                pending.shared = maybe;
                Claim::New(pending)
            }
        }
    }

    /// Claims `(host, id)` in this process's window.
    async fn claim_here(&self, host: &str, id: &str) -> Claim {
        let key = (host.to_string(), id.to_string());
        loop {
            let notified = {
                let mut inner = lock(&self.inner);
                self.expire(&mut inner);
                match inner.entries.get(&key) {
                    None => {
                        let notify = Arc::new(Notify::new());
                        inner
                            .entries
                            .insert(key.clone(), Entry::Pending(notify.clone()));
                        return Claim::New(Pending {
                            inner: self.inner.clone(),
                            key: Some(key),
                            notify,
                            shared: None,
                        });
                    }
                    Some(Entry::Done(queue_id)) => return Claim::Seen(queue_id.clone()),
                    // `notified()` is registered now, so the wake-up cannot be missed.
                    Some(Entry::Pending(notify)) => notify.clone().notified_owned(),
                }
            };
            notified.await;
        }
    }

    fn expire(&self, inner: &mut Inner) {
        let now = Instant::now();
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.window && inner.order.len() <= self.capacity {
                break;
            }
            if let Some((_, key)) = inner.order.pop_front() {
                inner.entries.remove(&key);
            }
        }
    }

    /// Ids remembered now (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Pending {
    /// Records the queue id the message got: here (waking the repeats waiting for it), then
    /// in the shared window.
    pub async fn complete(mut self, queue_id: &str) {
        self.complete_here(queue_id);
        if let Some(shared) = self.shared.take() {
            shared.complete(queue_id).await;
        }
    }

    fn complete_here(&mut self, queue_id: &str) {
        if let Some(key) = self.key.take() {
            let mut inner = lock(&self.inner);
            inner
                .entries
                .insert(key.clone(), Entry::Done(queue_id.to_string()));
            inner.order.push_back((Instant::now(), key));
            self.notify.notify_waiters();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.inner).entries.remove(&key);
            self.notify.notify_waiters();
        }
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn repeat_gets_first_id_and_failure_releases() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        let Claim::New(p) = d.claim("h", "m1").await else {
            panic!("first claim must be new")
        };
        p.complete("Q1").await;
        assert!(matches!(d.claim("h", "m1").await, Claim::Seen(id) if id == "Q1"));
        assert!(matches!(d.claim("other", "m1").await, Claim::New(_)));
        // a dropped claim (queueing failed) lets the retry through
        let Claim::New(p) = d.claim("h", "m2").await else {
            panic!()
        };
        drop(p);
        assert!(matches!(d.claim("h", "m2").await, Claim::New(_)));
    }

    #[tokio::test]
    async fn concurrent_repeat_waits_for_the_first() {
        let d = Arc::new(Dedupe::new(Duration::from_secs(60), 10));
        let Claim::New(p) = d.claim("h", "m").await else {
            panic!()
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move {
            match d2.claim("h", "m").await {
                Claim::Seen(id) => id,
                Claim::New(_) => "new".into(),
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        p.complete("Q9").await;
        assert_eq!(waiter.await.unwrap(), "Q9");
    }

    #[tokio::test]
    async fn window_and_capacity_expire() {
        let d = Dedupe::new(Duration::from_millis(30), 2);
        for id in ["a", "b", "c"] {
            if let Claim::New(p) = d.claim("h", id).await {
                p.complete(id).await;
            }
        }
        assert!(
            matches!(d.claim("h", "a").await, Claim::New(_)),
            "over capacity: forgotten"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            matches!(d.claim("h", "c").await, Claim::New(_)),
            "past the window: forgotten"
        );
    }
}
