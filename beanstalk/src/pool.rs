//! [`Pool`]: a bounded set of [`Client`]s that all `use` one tube, for concurrent `put`s
//! (the post office's HTTP handlers).
//!
//! At most `max_size` clients exist at once; [`Pool::get`] waits for a free one. A client
//! goes back to the idle list when its [`PooledClient`] is dropped, unless its connection
//! is broken or it now uses another tube; then it is dropped and a new one is opened on a
//! later `get`. After a connection error all idle clients are dropped too, since a dead
//! server has usually killed all of them. Not for reserving: a reserved job belongs to its
//! connection, so workers should own a [`Client`] each.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::{Client, Config};
use crate::error::{Error, Result};
use crate::proto::validate_tube;

/// A cloneable handle to a pool of connections to one beanstalkd and tube.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    tube: String,
    config: Config,
    max_size: usize,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    /// A pool of up to `max_size` (at least 1) connections to `addr` that `use` `tube`.
    /// Connects lazily; fails only on an invalid tube name.
    pub fn new(addr: impl Into<String>, tube: &str, max_size: usize) -> Result<Pool> {
        Pool::with_config(addr, tube, max_size, Config::default())
    }

    /// Like [`Pool::new`] with a [`Config`] for every connection.
    pub fn with_config(
        addr: impl Into<String>,
        tube: &str,
        max_size: usize,
        config: Config,
    ) -> Result<Pool> {
        validate_tube(tube)?;
        let max_size = max_size.max(1);
        Ok(Pool {
            inner: Arc::new(Inner {
                addr: addr.into(),
                tube: tube.to_owned(),
                config,
                max_size,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max_size)),
            }),
        })
    }

    /// The tube every pooled client uses.
    pub fn tube(&self) -> &str {
        &self.inner.tube
    }

    /// The most connections this pool opens.
    pub fn max_size(&self) -> usize {
        self.inner.max_size
    }

    /// How many connected clients are waiting in the pool.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// Takes a client: an idle one, or a new connection. Waits while `max_size` clients are
    /// out. Fails if a new connection cannot be opened (or its `use` fails).
    pub async fn get(&self) -> Result<PooledClient> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Protocol("pool closed".into()))?;
        let idle = self.idle().pop();
        let client = match idle {
            Some(client) => client,
            None => {
                let mut client =
                    Client::connect_with(self.inner.addr.clone(), self.inner.config.clone())
                        .await?;
                client.use_tube(&self.inner.tube).await?;
                client
            }
        };
        Ok(PooledClient {
            client: Some(client),
            pool: Arc::clone(&self.inner),
            _permit: permit,
        })
    }

    /// `put` through a pooled client; see [`Client::put`]. Never retried: after an error
    /// the job may or may not be queued (for connection errors), and the caller decides.
    pub async fn put(&self, body: &[u8], pri: u32, delay: Duration, ttr: Duration) -> Result<u64> {
        let mut client = self.get().await?;
        client.put(body, pri, delay, ttr).await
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.inner.idle()
    }
}

impl Inner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A client on loan from a [`Pool`]; derefs to [`Client`] and goes back on drop.
#[derive(Debug)]
pub struct PooledClient {
    client: Option<Client>,
    pool: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for PooledClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Only `Drop` takes the client out.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut idle = self.pool.idle();
        if client.is_connected() && client.used_tube() == self.pool.tube {
            idle.push(client);
        } else if client.lost_connection() {
            // This connection broke; the idle ones most likely share its fate (server
            // restart), so let the next gets open fresh connections instead of failing
            // one by one. (A cancelled call or a changed tube only discards this client.)
            idle.clear();
        }
    }
}
