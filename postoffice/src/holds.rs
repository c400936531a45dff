//! Reading and writing the hold list in beanstalkd (format in [`hedwig_core::hold`]), and the
//! intake's short-lived cache of it.
//!
//! The list is stored on every beanstalkd server; writers update each server, readers take the
//! union of what the servers they can reach say. A server that cannot be read keeps its last
//! known list in the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beanstalk::{Client, Error as BeanstalkError};
use hedwig_core::hold::{HoldError, HoldList, CACHE_FOR, TUBE_HOLDS};

/// Most stale jobs a writer cleans up from the holds tube in one update.
const MAX_CLEANUP: usize = 1000;
/// Limit on one read of the list by the intake.
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
    client.use_tube(tube).await?;
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
pub async fn read(client: &mut Client) -> Result<HoldList, HoldsError> {
    using(client, TUBE_HOLDS, async |c: &mut Client| {
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
pub async fn write(client: &mut Client, list: &HoldList) -> Result<(), HoldsError> {
    let body = list.encode();
    using(client, TUBE_HOLDS, async |c: &mut Client| {
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
    change: impl FnOnce(&mut HoldList) -> Result<bool, HoldError>,
) -> Result<HoldList, HoldsError> {
    let mut list = read(client).await?;
    if change(&mut list)? {
        write(client, &list).await?;
    }
    Ok(list)
}

/// The intake's view of the list: the union over all servers, refreshed at most every
/// [`CACHE_FOR`]. One request refreshes a stale list while the others go on with the
/// previous one; only the very first read is waited for.
pub struct HoldCache {
    inner: tokio::sync::Mutex<Cached>,
    current: std::sync::RwLock<(Option<Instant>, Arc<HoldList>)>,
    ttl: Duration,
}

struct Cached {
    servers: Vec<CachedServer>,
}

struct CachedServer {
    addr: String,
    client: Option<Client>,
    list: HoldList,
}

impl HoldCache {
    /// A cache of the lists on `servers`; nothing is read until the first [`is_held`](Self::is_held).
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a str>) -> HoldCache {
        HoldCache::with_ttl(servers, CACHE_FOR)
    }

    /// Like [`new`](Self::new) with another refresh interval.
    pub fn with_ttl<'a>(servers: impl IntoIterator<Item = &'a str>, ttl: Duration) -> HoldCache {
        HoldCache {
            inner: tokio::sync::Mutex::new(Cached {
                servers: servers
                    .into_iter()
                    .map(|addr| CachedServer {
                        addr: addr.to_owned(),
                        client: None,
                        list: HoldList::new(),
                    })
                    .collect(),
            }),
            current: std::sync::RwLock::new((None, Arc::new(HoldList::new()))),
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
        let mut cached = match refreshed {
            // Never read: wait for the first read.
            None => self.inner.lock().await,
            Some(_) => match self.inner.try_lock() {
                Ok(cached) => cached,
                // Another request is refreshing: use the previous list.
                Err(_) => return list.is_held(host),
            },
        };
        // Someone may have refreshed while we waited for the lock.
        let (refreshed, list) = self.snapshot();
        if refreshed.is_some_and(|at| at.elapsed() < self.ttl) {
            return list.is_held(host);
        }
        let union = Arc::new(cached.refresh().await);
        let held = union.is_held(host);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), union);
        held
    }
}

impl Cached {
    async fn refresh(&mut self) -> HoldList {
        let mut union = HoldList::new();
        for server in &mut self.servers {
            match tokio::time::timeout(READ_TIMEOUT, server.read()).await {
                Ok(Ok(list)) => server.list = list,
                Ok(Err(e)) => {
                    server.client = None;
                    tracing::warn!(beanstalkd = %server.addr, error = %e, "cannot read the hold list; using the last one read");
                }
                Err(_) => {
                    server.client = None;
                    tracing::warn!(beanstalkd = %server.addr, "hold list read timed out; using the last one read");
                }
            }
            union = union.union(&server.list);
        }
        union
    }
}

impl CachedServer {
    async fn read(&mut self) -> Result<HoldList, HoldsError> {
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
        read(client).await
    }
}
