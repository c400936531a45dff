//! Held sending hosts: the hold list, its format, reading and writing it in beanstalkd, and
//! the caches the post office and the workers keep of it.
//!
//! The hold list lives in beanstalkd itself, the only state every post office and worker
//! shares. On every beanstalkd server, the holds tube ([`Tubes::holds`], `hedwig-holds`) holds
//! one **buried** job whose body is [`HoldList::encode`]: `{"v":1,"hosts":["web1.example.com"]}`.
//! Anyone reads it with `use <holds tube>` + `peek-buried` (a buried job is never reserved, so
//! reading it disturbs nobody). No buried job means nothing is held. A writer ([`write`]) puts
//! the new list, buries it, then deletes the older buried jobs; `peek-buried` answers the
//! oldest buried job, so readers see the old list until the old job is deleted, never an
//! empty one.
//!
//! Mail of a held host waits in the held tube ([`Tubes::held`]), which no worker watches.
//! Releasing a host removes it from the list and moves its jobs from the held tube back to the
//! outbound tube (`postoffice release`, in `postoffice::admin::hold`).
//!
//! Readers cache the list for [`CACHE_FOR`]: the intake's [`HoldCache`] (the union over every
//! server, its own connections), a worker task's [`Snapshot`] (its own server, through its
//! putting connection). Both keep the last list read when a read fails: a beanstalkd hiccup
//! neither delivers a held host's mail nor stalls delivery.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beanstalk::{Client, Error as BeanstalkError};
use serde::{Deserialize, Serialize};

use crate::tubes::Tubes;

/// How long readers may cache the list. `release` waits a little longer than this before its
/// second sweep of the held tube, so mail queued by a post office with a stale cache is not
/// left behind.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// Format version written by this build.
pub const VERSION: u32 = 1;
/// Most hosts a list may hold (keeps the job small and the reader's memory bounded).
pub const MAX_HOSTS: usize = 10_000;

/// Why a hold list body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("hold list is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("hold list format version {0} is newer than this build understands")]
    Version(u32),
    #[error("hold list has {0} hosts; at most {MAX_HOSTS}")]
    TooMany(usize),
}

/// The set of held sending hosts (lowercase fqdns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldList {
    v: u32,
    hosts: BTreeSet<String>,
}

impl HoldList {
    /// An empty list.
    pub fn new() -> HoldList {
        HoldList {
            v: VERSION,
            hosts: BTreeSet::new(),
        }
    }

    /// Reads a job body written by [`HoldList::encode`].
    pub fn decode(body: &[u8]) -> Result<HoldList, HoldError> {
        let mut list: HoldList = serde_json::from_slice(body).map_err(HoldError::Json)?;
        if list.v > VERSION {
            return Err(HoldError::Version(list.v));
        }
        if list.hosts.len() > MAX_HOSTS {
            return Err(HoldError::TooMany(list.hosts.len()));
        }
        list.v = VERSION;
        list.hosts = list.hosts.iter().map(|h| normalize(h)).collect();
        Ok(list)
    }

    /// The job body to store (compact JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("HoldList serializes to JSON"))
    }

    /// Whether mail of `host` is held (case-insensitive, trailing dot ignored).
    pub fn is_held(&self, host: &str) -> bool {
        self.hosts.contains(&normalize(host))
    }

    /// Holds `host`; false when it was already held.
    pub fn hold(&mut self, host: &str) -> Result<bool, HoldError> {
        if self.hosts.len() >= MAX_HOSTS {
            return Err(HoldError::TooMany(self.hosts.len() + 1));
        }
        Ok(self.hosts.insert(normalize(host)))
    }

    /// Releases `host`; false when it was not held.
    pub fn release(&mut self, host: &str) -> bool {
        self.hosts.remove(&normalize(host))
    }

    /// The held hosts, sorted.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every host held in either list (post offices read the list from each beanstalkd and
    /// treat a host as held if any server says so).
    pub fn union(&self, other: &HoldList) -> HoldList {
        HoldList {
            v: VERSION,
            hosts: self.hosts.union(&other.hosts).cloned().collect(),
        }
    }
}

/// The form hosts are compared in: lowercase, no trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Most stale jobs a writer cleans up from the holds tube in one update.
const MAX_CLEANUP: usize = 1000;
/// Limit on one read of the list by the intake's cache.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the hold list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HoldsError {
    #[error("beanstalkd: {0}")]
    Queue(#[from] BeanstalkError),
    #[error("hold list in beanstalkd: {0}")]
    Format(#[from] HoldError),
}

/// Runs `f` with `client` using `tube`, then switches back to the tube it used before.
async fn using<T>(
    client: &mut Client,
    tube: &str,
    f: impl AsyncFnOnce(&mut Client) -> Result<T, HoldsError>,
) -> Result<T, HoldsError> {
    let before = client.used_tube().to_owned();
    if before != tube {
        client.use_tube(tube).await?;
    }
    let result = f(client).await;
    if before != tube {
        // Best effort: a failure here drops the connection, and the reconnect restores
        // whatever `used_tube` says.
        let _ = client.use_tube(&before).await;
    }
    result
}

/// Reads the list from the server `client` is connected to (`peek-buried` in the holds tube;
/// none buried: nothing held).
pub async fn read(client: &mut Client, tubes: &Tubes) -> Result<HoldList, HoldsError> {
    using(client, tubes.holds(), async |c: &mut Client| {
        match c.peek_buried().await {
            Ok(job) => Ok(HoldList::decode(&job.body)?),
            Err(BeanstalkError::NotFound) => Ok(HoldList::new()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Replaces the list on this server: puts the new one, buries it, then deletes older buried
/// (and stray ready) jobs in the holds tube. Readers see the old list until then, never none.
pub async fn write(client: &mut Client, tubes: &Tubes, list: &HoldList) -> Result<(), HoldsError> {
    let body = list.encode();
    using(client, tubes.holds(), async |c: &mut Client| {
        let id = c
            .put(&body, 0, Duration::ZERO, Duration::from_secs(60))
            .await?;
        c.reserve_job(id).await?;
        c.bury(id, 0).await?;
        for _ in 0..MAX_CLEANUP {
            match c.peek_buried().await {
                Ok(job) if job.id != id => c.delete(job.id).await?,
                Ok(_) | Err(BeanstalkError::NotFound) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Left by a writer that died between its put and its bury.
        for _ in 0..MAX_CLEANUP {
            match c.peek_ready().await {
                Ok(job) => c.delete(job.id).await?,
                Err(BeanstalkError::NotFound) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
    .await
}

/// Reads the list, applies `change`, and writes it back when `change` returns true.
/// Returns the list as written (or as read, when unchanged).
pub async fn update(
    client: &mut Client,
    tubes: &Tubes,
    change: impl FnOnce(&mut HoldList) -> Result<bool, HoldError>,
) -> Result<HoldList, HoldsError> {
    let mut list = read(client, tubes).await?;
    if change(&mut list)? {
        write(client, tubes, &list).await?;
    }
    Ok(list)
}

/// The last list read from one server, and when: the one cache entry both readers keep.
#[derive(Debug, Default)]
pub struct Snapshot {
    read_at: Option<Instant>,
    list: HoldList,
}

impl Snapshot {
    /// The last list read (empty before the first read).
    pub fn list(&self) -> &HoldList {
        &self.list
    }

    /// Whether the last read attempt is younger than `ttl`.
    pub fn is_fresh(&self, ttl: Duration) -> bool {
        self.read_at.is_some_and(|at| at.elapsed() < ttl)
    }

    /// Reads the list through `client` now. A failed read keeps the last list; the error is
    /// returned for the caller to log (and, with its own connection, to drop it).
    pub async fn reread(&mut self, client: &mut Client, tubes: &Tubes) -> Result<(), HoldsError> {
        self.read_at = Some(Instant::now());
        self.list = read(client, tubes).await?;
        Ok(())
    }

    /// Whether `host` is held, re-reading through `client` when the list is older than
    /// [`CACHE_FOR`] (a worker task: its own server, its own connection).
    pub async fn is_held(&mut self, client: &mut Client, tubes: &Tubes, host: &str) -> bool {
        if !self.is_fresh(CACHE_FOR) {
            if let Err(e) = self.reread(client, tubes).await {
                tracing::warn!(error = %e, "cannot read the hold list, using the last one");
            }
        }
        self.list.is_held(host)
    }
}

/// The intake's view of the list: the union over all servers, refreshed at most every
/// [`CACHE_FOR`]. One request refreshes a stale list while the others go on with the
/// previous one; only the very first read is waited for.
pub struct HoldCache {
    inner: tokio::sync::Mutex<Vec<CachedServer>>,
    current: std::sync::RwLock<(Option<Instant>, Arc<HoldList>)>,
    tubes: Tubes,
    ttl: Duration,
}

struct CachedServer {
    addr: String,
    client: Option<Client>,
    snapshot: Snapshot,
}

impl HoldCache {
    /// A cache of the lists on `servers`; nothing is read until the first [`is_held`](Self::is_held).
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a str>, tubes: Tubes) -> HoldCache {
        HoldCache::with_ttl(servers, tubes, CACHE_FOR)
    }

    /// Like [`new`](Self::new) with another refresh interval.
    pub fn with_ttl<'a>(
        servers: impl IntoIterator<Item = &'a str>,
        tubes: Tubes,
        ttl: Duration,
    ) -> HoldCache {
        HoldCache {
            inner: tokio::sync::Mutex::new(
                servers
                    .into_iter()
                    .map(|addr| CachedServer {
                        addr: addr.to_owned(),
                        client: None,
                        snapshot: Snapshot::default(),
                    })
                    .collect(),
            ),
            current: std::sync::RwLock::new((None, Arc::new(HoldList::new()))),
            tubes,
            ttl,
        }
    }

    fn snapshot(&self) -> (Option<Instant>, Arc<HoldList>) {
        // A panic while holding this lock cannot leave the pair inconsistent.
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// Whether `host` is held, by a list at most about `ttl` old (or the last one that could
    /// be read). A refresh costs at most ~1s per unreachable server.
    pub async fn is_held(&self, host: &str) -> bool {
        let (refreshed, list) = self.snapshot();
        if refreshed.is_some_and(|at| at.elapsed() < self.ttl) {
            return list.is_held(host);
        }
        let mut servers = match refreshed {
            // Never read: wait for the first read.
            None => self.inner.lock().await,
            Some(_) => match self.inner.try_lock() {
                Ok(servers) => servers,
                // Another request is refreshing: use the previous list.
                Err(_) => return list.is_held(host),
            },
        };
        // Someone may have refreshed while we waited for the lock.
        let (refreshed, list) = self.snapshot();
        if refreshed.is_some_and(|at| at.elapsed() < self.ttl) {
            return list.is_held(host);
        }
        let mut union = HoldList::new();
        for server in servers.iter_mut() {
            server.refresh(&self.tubes).await;
            union = union.union(server.snapshot.list());
        }
        let union = Arc::new(union);
        let held = union.is_held(host);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), union);
        held
    }
}

impl CachedServer {
    /// Re-reads this server's list within [`READ_TIMEOUT`]; on failure keeps the last one and
    /// drops the connection.
    async fn refresh(&mut self, tubes: &Tubes) {
        let read = async {
            let client = match &mut self.client {
                Some(client) => client,
                None => {
                    let config = beanstalk::Config {
                        connect_timeout: READ_TIMEOUT,
                        io_timeout: Some(READ_TIMEOUT),
                        ..beanstalk::Config::default()
                    };
                    self.client
                        .insert(Client::connect_with(self.addr.clone(), config).await?)
                }
            };
            self.snapshot.reread(client, tubes).await
        };
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.client = None;
                tracing::warn!(beanstalkd = %self.addr, error = %e, "cannot read the hold list; using the last one read");
            }
            Err(_) => {
                self.client = None;
                tracing::warn!(beanstalkd = %self.addr, "hold list read timed out; using the last one read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_lookup() {
        let mut list = HoldList::new();
        assert!(list.hold("Web1.Example.COM.").unwrap());
        assert!(!list.hold("web1.example.com").unwrap());
        list.hold("web2.example.com").unwrap();
        let body = list.encode();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"v":1,"hosts":["web1.example.com","web2.example.com"]}"#
        );
        let back = HoldList::decode(&body).unwrap();
        assert_eq!(back, list);
        assert!(back.is_held("WEB1.example.com"));
        assert!(!back.is_held("web3.example.com"));
        let mut back = back;
        assert!(back.release("web1.example.com"));
        assert!(!back.release("web1.example.com"));
        assert_eq!(back.hosts().collect::<Vec<_>>(), ["web2.example.com"]);
    }

    #[test]
    fn decode_normalizes_and_checks() {
        let list = HoldList::decode(br#"{"v":1,"hosts":["A.example.com."]}"#).unwrap();
        assert!(list.is_held("a.example.com"));
        assert!(matches!(
            HoldList::decode(br#"{"v":9,"hosts":[]}"#),
            Err(HoldError::Version(9))
        ));
        assert!(matches!(
            HoldList::decode(b"not json"),
            Err(HoldError::Json(_))
        ));
    }

    #[test]
    fn union_of_lists() {
        let mut a = HoldList::new();
        a.hold("a.example").unwrap();
        let mut b = HoldList::new();
        b.hold("b.example").unwrap();
        let u = a.union(&b);
        assert!(u.is_held("a.example") && u.is_held("b.example"));
        assert!(HoldList::new().is_empty());
    }
}
