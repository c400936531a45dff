//! beanstalkd as the post office sees it: one or more servers, a pool of connections to
//! each, the choice of server per sending host with failover, and the start-up check that the
//! servers are there and take jobs as large as our limit.
//!
//! Each host's mail goes to the server at `hash(host) % n` (a fixed FNV-1a hash, so every
//! post office picks the same one and a host's mail stays in order on one server). When that
//! server is down the next one in the list takes it. A put is sent to a second server only
//! when the first certainly did not receive it (the connection could not be opened, or the
//! server is draining); after a lost reply the message may be queued, so the answer is 503
//! and nothing is put twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use beanstalk::{Client, Error as BeanstalkError, Pool};

use crate::config::{Settings, JOB_OVERHEAD};

/// How long a server that refused a connection is tried last.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Connect limit for intake connections; a timeout of exactly this long is a connect failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why beanstalkd is not fit to queue into.
#[derive(Debug, thiserror::Error)]
pub enum QueueCheckError {
    #[error("beanstalkd at {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: BeanstalkError,
    },
    #[error(
        "beanstalkd at {addr} takes jobs of at most {max_job_size} bytes, but max_message_size \
         is {max_message_size} (plus {JOB_OVERHEAD} bytes of envelope): start beanstalkd with \
         `-z {needed}` or lower max_message_size"
    )]
    JobSize {
        addr: String,
        max_job_size: u64,
        max_message_size: u64,
        needed: u64,
    },
    #[error("invalid tube name: {0}")]
    Tube(#[from] BeanstalkError),
    #[error("no beanstalkd server configured")]
    NoServers,
}

/// Connects once to `addr` and compares `max-job-size` with `max_message_size` (plus the
/// envelope). Returns the server's limit.
pub async fn check_one(addr: &str, max_message_size: u64) -> Result<u64, QueueCheckError> {
    let unreachable = |source| QueueCheckError::Unreachable {
        addr: addr.to_owned(),
        source,
    };
    let mut client = Client::connect_with(addr, client_config())
        .await
        .map_err(unreachable)?;
    let stats = client.stats().await.map_err(unreachable)?;
    let max_job_size = stats.get_u64("max-job-size").unwrap_or(65_535);
    let needed = max_message_size + JOB_OVERHEAD;
    if max_job_size < needed {
        return Err(QueueCheckError::JobSize {
            addr: addr.to_owned(),
            max_job_size,
            max_message_size,
            needed,
        });
    }
    Ok(max_job_size)
}

/// Checks every server of `servers` (the `beanstalkd` list, parsed when the config was
/// read); one result per server, in that order.
pub async fn check_all(
    servers: &[String],
    max_message_size: u64,
) -> Vec<(String, Result<u64, QueueCheckError>)> {
    let mut results = Vec::new();
    for addr in servers {
        let result = check_one(addr, max_message_size).await;
        results.push((addr.clone(), result));
    }
    results
}

/// Waits up to `startup_wait` until at least one server answers (they may be starting next to
/// us under docker-compose), then checks the job size on every server that answers. Servers
/// still down are logged and used once they come up. Returns the smallest `max-job-size`.
pub async fn wait_and_check(settings: &Settings) -> Result<u64, QueueCheckError> {
    let config = &settings.config;
    let deadline = Instant::now() + config.startup_wait;
    loop {
        let mut smallest: Option<u64> = None;
        let mut last_unreachable = None;
        for (addr, result) in check_all(&settings.servers, config.max_message_size.0).await {
            match result {
                Ok(size) => smallest = Some(smallest.map_or(size, |s| s.min(size))),
                Err(e @ QueueCheckError::Unreachable { .. }) => {
                    tracing::warn!(beanstalkd = %addr, error = %e, "beanstalkd unreachable");
                    last_unreachable = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match (smallest, last_unreachable) {
            (Some(size), _) => return Ok(size),
            (None, Some(e)) if Instant::now() >= deadline => return Err(e),
            (None, None) => return Err(QueueCheckError::NoServers),
            (None, Some(_)) => {
                tracing::warn!(beanstalkd = %settings.servers.join(","), "waiting for beanstalkd");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn client_config() -> beanstalk::Config {
    beanstalk::Config {
        connect_timeout: CONNECT_TIMEOUT,
        io_timeout: Some(IO_TIMEOUT),
        ..beanstalk::Config::default()
    }
}

/// Which tube a put goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The configured outbound tube.
    Outbound,
    /// The held tube: the host is held.
    Held,
}

/// Where a put landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub server: String,
    pub job_id: u64,
}

/// A failed put.
#[derive(Debug, thiserror::Error)]
#[error("beanstalkd at {server}: {source}")]
pub struct PutError {
    pub server: String,
    #[source]
    pub source: BeanstalkError,
}

struct Server {
    addr: String,
    outbound: Pool,
    held: Pool,
    /// Milliseconds since `Queue::epoch` until which this server is tried last.
    down_until: AtomicU64,
}

/// Every configured server with its pools.
pub struct Queue {
    servers: Vec<Server>,
    epoch: Instant,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.servers.iter().map(|s| &s.addr))
            .finish()
    }
}

/// FNV-1a, 64 bits: stable across builds and processes (std's hasher is not).
pub fn host_hash(host: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in hedwig_queue::hold::normalize(host).bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Whether a failed put certainly never reached the server, so another server may take the
/// message without risking a second copy.
pub fn certainly_not_sent(err: &BeanstalkError) -> bool {
    use std::io::ErrorKind;
    match err {
        BeanstalkError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::NotConnected
        ),
        BeanstalkError::Timeout(limit) => *limit == CONNECT_TIMEOUT,
        BeanstalkError::Draining | BeanstalkError::InvalidTubeName(_) => true,
        _ => false,
    }
}

impl Queue {
    /// Pools for every server of the checked `beanstalkd` list, putting into the checked
    /// tubes (connects lazily).
    pub fn new(settings: &Settings) -> Result<Queue, QueueCheckError> {
        let (config, tubes, addrs) = (&settings.config, &settings.tubes, &settings.servers);
        if addrs.is_empty() {
            return Err(QueueCheckError::NoServers);
        }
        let held_pool = (config.pool_size / 8).max(2);
        let servers = addrs
            .iter()
            .map(|addr| {
                Ok(Server {
                    addr: addr.clone(),
                    outbound: Pool::with_config(
                        addr.clone(),
                        tubes.outbound(),
                        config.pool_size,
                        client_config(),
                    )?,
                    held: Pool::with_config(
                        addr.clone(),
                        tubes.held(),
                        held_pool,
                        client_config(),
                    )?,
                    down_until: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, BeanstalkError>>()?;
        Ok(Queue {
            servers,
            epoch: Instant::now(),
        })
    }

    /// The server addresses, in configured order.
    pub fn addrs(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.addr.as_str())
    }

    /// The order in which servers are tried for `host`: its own first, then the next ones;
    /// servers that recently refused connections go last.
    pub fn order(&self, host: &str) -> Vec<usize> {
        let n = self.servers.len();
        let start = (host_hash(host) % n as u64) as usize;
        let now = self.now_ms();
        let (up, down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| self.servers[i].down_until.load(Ordering::Relaxed) <= now);
        up.into_iter().chain(down).collect()
    }

    fn mark_down(&self, server: &Server) {
        let until = self.now_ms().saturating_add(DOWN_FOR.as_millis() as u64);
        server.down_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Puts one job for `host`. Tries the next server only when the previous one certainly
    /// did not receive the job (see [`certainly_not_sent`]); returns the last error otherwise.
    pub async fn put(
        &self,
        host: &str,
        target: Target,
        body: &[u8],
        pri: u32,
        ttr: Duration,
    ) -> Result<Placed, PutError> {
        let mut last = None;
        for i in self.order(host) {
            let server = &self.servers[i];
            let pool = match target {
                Target::Outbound => &server.outbound,
                Target::Held => &server.held,
            };
            let fail = |source| PutError {
                server: server.addr.clone(),
                source,
            };
            // Opening a connection sends no job: any error here is safe to fail over.
            let mut client = match pool.get().await {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(beanstalkd = %server.addr, error = %e, "cannot connect to beanstalkd; trying the next server");
                    self.mark_down(server);
                    last = Some(fail(e));
                    continue;
                }
            };
            let result = client.put(body, pri, Duration::ZERO, ttr).await;
            drop(client);
            match result {
                Ok(job_id) => {
                    server.down_until.store(0, Ordering::Relaxed);
                    return Ok(Placed {
                        server: server.addr.clone(),
                        job_id,
                    });
                }
                Err(BeanstalkError::Buried(job_id)) => {
                    // The server kept the job but buried it (out of memory). Take it back so
                    // that the sender's retry does not deliver it twice.
                    if let Ok(mut client) = pool.get().await {
                        let _ = client.delete(job_id).await;
                    }
                    return Err(fail(BeanstalkError::Buried(job_id)));
                }
                Err(e) if certainly_not_sent(&e) => {
                    tracing::warn!(beanstalkd = %server.addr, error = %e, "beanstalkd refused the put; trying the next server");
                    self.mark_down(server);
                    last = Some(fail(e));
                }
                Err(e) => return Err(fail(e)),
            }
        }
        Err(last.unwrap_or_else(|| PutError {
            server: String::new(),
            source: BeanstalkError::Protocol("no beanstalkd server configured".into()),
        }))
    }

    /// Asks every server for its used tube (within 2s each, concurrently); per server
    /// `Ok(())` or the error text.
    pub async fn probe(&self) -> Vec<(String, Result<(), String>)> {
        let probes = self.servers.iter().map(|server| async move {
            let probe = async {
                let mut client = server.outbound.get().await?;
                client.list_tube_used().await
            };
            let result = match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("did not answer within 2s".to_owned()),
            };
            (server.addr.clone(), result)
        });
        futures_util::future::join_all(probes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn hash_is_stable_and_case_insensitive() {
        assert_eq!(host_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            host_hash("Web1.Example.com."),
            host_hash("web1.example.com")
        );
    }

    #[test]
    fn order_starts_at_the_hosts_server_and_demotes_down_ones() {
        let config = Config {
            beanstalkd: vec![
                "127.0.0.1:1".into(),
                "127.0.0.1:2".into(),
                "127.0.0.1:3".into(),
            ],
            secret: Some("x".repeat(40)),
            ..Config::default()
        };
        let q = Queue::new(&config.check().unwrap()).unwrap();
        let start = (host_hash("h.example") % 3) as usize;
        let order = q.order("h.example");
        assert_eq!(order, [start, (start + 1) % 3, (start + 2) % 3]);
        q.servers[start]
            .down_until
            .store(u64::MAX, Ordering::Relaxed);
        assert_eq!(
            q.order("h.example"),
            [(start + 1) % 3, (start + 2) % 3, start]
        );
    }

    #[test]
    fn only_unsent_errors_fail_over() {
        let refused = BeanstalkError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(certainly_not_sent(&refused));
        assert!(certainly_not_sent(&BeanstalkError::Draining));
        assert!(certainly_not_sent(&BeanstalkError::Timeout(
            CONNECT_TIMEOUT
        )));
        assert!(!certainly_not_sent(&BeanstalkError::Timeout(IO_TIMEOUT)));
        let reset = BeanstalkError::Io(std::io::ErrorKind::ConnectionReset.into());
        assert!(!certainly_not_sent(&reset));
        assert!(!certainly_not_sent(&BeanstalkError::JobTooBig));
    }
}
