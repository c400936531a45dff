//! Per-destination limits and slow-down, and the pool of idle SMTP connections for reuse.
//!
//! A destination is an MX host name, or a recipient domain when `limits.destinations` names
//! the domain (so `gmail.com: {...}` caps all of Gmail's MX hosts together). Each has a cap on
//! concurrent connections, on messages per connection, and on messages per minute (a token
//! bucket). A `421` or a `4.7.x` "too many" answer puts the destination in a cool-down: for
//! `cooldown` its mail is deferred without connecting, and the retry is scheduled after the
//! cool-down rather than on the normal backoff.
//!
//! Idle connections are kept per (host, address, port, TLS mode, login, IP pool) for
//! `idle_time` and reused for the next message to the same place; the server's `421` on a
//! reused connection just means "open a new one".

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::policy::{Limit, Limits, TlsMode};
use crate::smtp::session::Session;

/// Most destinations remembered; idle ones are forgotten beyond this (bounded memory).
const MAX_DESTINATIONS: usize = 10_000;

/// The runtime state of one destination.
#[derive(Debug)]
pub struct Destination {
    pub name: String,
    pub limit: Limit,
    connections: Option<Arc<Semaphore>>,
    bucket: Mutex<Bucket>,
    cooling_until: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a destination cannot be used right now, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy(pub Duration);

impl Destination {
    fn new(name: String, limit: Limit) -> Destination {
        Destination {
            name,
            limit,
            connections: (limit.connections > 0)
                .then(|| Arc::new(Semaphore::new(limit.connections))),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limit.messages_per_minute),
                at: Instant::now(),
            }),
            cooling_until: Mutex::new(None),
        }
    }

    /// The time left in a cool-down, if any.
    pub fn cooling(&self) -> Option<Duration> {
        let until = *lock(&self.cooling_until);
        until.and_then(|u| u.checked_duration_since(Instant::now()))
    }

    /// Starts (or extends) a cool-down.
    pub fn cool_down(&self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut c = lock(&self.cooling_until);
        if c.is_none_or(|old| old < until) {
            *c = Some(until);
        }
    }

    /// Takes one message token; `Err(wait)` when the per-minute cap is reached.
    pub fn take_token(&self) -> Result<(), Busy> {
        let per_minute = self.limit.messages_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(per_minute) / 60.0;
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(per_minute));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Busy(Duration::from_secs_f64((1.0 - b.tokens) / rate)))
        }
    }

    /// A connection slot, waiting at most `wait`; `None` when the cap stays full.
    pub async fn slot(
        &self,
        wait: Duration,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Busy> {
        let Some(sem) = &self.connections else {
            return Ok(None);
        };
        match tokio::time::timeout(wait, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Busy(wait)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a connection goes, for reuse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub host: String,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    /// The transport whose login the session did (`None`: no AUTH), so that an authenticated
    /// connection is only reused by the transport that logged in.
    pub login: Option<String>,
    /// The IP pool the connection was opened from (`None`: no pool), so that mail of one
    /// pool never leaves over another pool's connection.
    pub pool: Option<String>,
}

/// An open session waiting for its next message.
pub struct Idle {
    pub session: Session<TcpStream>,
    /// Messages sent over it so far.
    pub sent: usize,
    /// The local address it was bound to (an IP pool's), if any.
    pub source: Option<IpAddr>,
    since: Instant,
}

/// Destinations and idle connections, shared by all tasks.
pub struct Destinations {
    limits: Limits,
    map: Mutex<HashMap<String, Arc<Destination>>>,
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl std::fmt::Debug for Destinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destinations")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Destinations {
    pub fn new(limits: Limits) -> Destinations {
        Destinations {
            limits,
            map: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The destination for mail to `domain` through MX host `host`.
    pub fn get(&self, domain: &str, host: &str) -> Arc<Destination> {
        let (name, limit) = match (
            self.limits.destinations.get(host),
            self.limits.destinations.get(domain),
        ) {
            (Some(l), _) => (host, *l),
            (None, Some(l)) => (domain, *l),
            (None, None) => (host, self.limits.default),
        };
        let mut map = lock(&self.map);
        if let Some(d) = map.get(name) {
            return d.clone();
        }
        if map.len() >= MAX_DESTINATIONS {
            // Forget destinations nobody holds and that are not cooling down.
            map.retain(|_, d| Arc::strong_count(d) > 1 || d.cooling().is_some());
        }
        let d = Arc::new(Destination::new(name.to_string(), limit));
        map.insert(name.to_string(), d.clone());
        d
    }

    /// An idle connection to `key`, if one is fresh enough.
    pub fn take_idle(&self, key: &PoolKey) -> Option<Idle> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(key)?;
        let max_age = self.limits.idle_time;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() <= max_age {
                return Some(conn);
            }
            tokio::spawn(conn.session.quit());
        }
        None
    }

    /// Keeps a session for reuse, or closes it when it has sent enough or too many idle.
    pub fn put_idle(
        &self,
        key: PoolKey,
        session: Session<TcpStream>,
        source: Option<IpAddr>,
        sent: usize,
        limit: &Limit,
    ) {
        if sent >= limit.messages_per_connection.max(1) || self.limits.idle_time.is_zero() {
            tokio::spawn(session.quit());
            return;
        }
        let mut idle = lock(&self.idle);
        let list = idle.entry(key).or_default();
        let cap = limit.connections.clamp(1, 32);
        if list.len() >= cap {
            let oldest = list.remove(0);
            tokio::spawn(oldest.session.quit());
        }
        list.push(Idle {
            session,
            sent,
            source,
            since: Instant::now(),
        });
    }

    /// Closes idle connections older than `idle_time` (all of them with `all`).
    pub fn reap(&self, all: bool) {
        let max_age = self.limits.idle_time;
        let mut idle = lock(&self.idle);
        for list in idle.values_mut() {
            let (old, keep): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                .into_iter()
                .partition(|c| all || c.since.elapsed() > max_age);
            *list = keep;
            for conn in old {
                tokio::spawn(conn.session.quit());
            }
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_by_host_then_domain_then_default() {
        let mut limits = Limits::default();
        let big = Limit {
            connections: 3,
            messages_per_connection: 10,
            messages_per_minute: 0,
        };
        limits.destinations.insert("gmail.com".into(), big);
        let d = Destinations::new(limits);
        let a = d.get("gmail.com", "alt1.gmail-smtp-in.l.google.com");
        let b = d.get("gmail.com", "alt2.gmail-smtp-in.l.google.com");
        assert!(
            Arc::ptr_eq(&a, &b),
            "one destination for all of gmail.com's MX"
        );
        assert_eq!(a.limit, big);
        let c = d.get("example.com", "mx.example.com");
        assert_eq!(c.name, "mx.example.com");
        assert_eq!(c.limit, Limit::default());
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_refills() {
        let d = Destination::new(
            "x".into(),
            Limit {
                messages_per_minute: 2,
                ..Limit::default()
            },
        );
        assert!(d.take_token().is_ok());
        assert!(d.take_token().is_ok());
        let Err(Busy(wait)) = d.take_token() else {
            panic!("third token in the same minute")
        };
        assert!(
            wait > Duration::from_secs(29) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(d.take_token().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_expires() {
        let d = Destination::new("x".into(), Limit::default());
        assert_eq!(d.cooling(), None);
        d.cool_down(Duration::from_secs(60));
        d.cool_down(Duration::from_secs(10));
        assert!(d.cooling().unwrap() > Duration::from_secs(50));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(d.cooling(), None);
    }

    #[tokio::test]
    async fn connection_cap() {
        let d = Destination::new(
            "x".into(),
            Limit {
                connections: 1,
                ..Limit::default()
            },
        );
        let first = d.slot(Duration::from_millis(10)).await.unwrap();
        assert!(first.is_some());
        assert_eq!(
            d.slot(Duration::from_millis(10)).await.unwrap_err(),
            Busy(Duration::from_millis(10))
        );
        drop(first);
        assert!(d.slot(Duration::from_millis(10)).await.is_ok());
    }
}
