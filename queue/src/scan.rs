//! Reading tubes while workers run: what the admin commands (`postoffice failed`, `requeue`,
//! `purge`, `show`, `stats`, `release`) see of the failed, held and outbound tubes.
//!
//! - [`Batch`]: reserves every job of a tube no worker watches (the failed and held tubes),
//!   up to a limit, so that a command can act on them; [`Batch::finish`] releases the rest.
//!   Only the envelopes are kept in memory; a job's message is fetched again with `peek` when
//!   a command needs it.
//! - [`peek_recent`]: looks at the most recent job ids with `stats-job` and `peek`, in any
//!   tube and state, without reserving anything. It can only see jobs whose id is within the
//!   window, so it is a sample of a long queue, not a census.
//!
//! How the failed tube is read while workers run: workers never watch it, so an admin
//! connection `watch`es it, `ignore`s `default`, and `reserve-with-timeout 0` until
//! `TIMED_OUT` (at most the limit), acts on what it reserved, then `release`s what it keeps
//! (priority and delay 0). If the admin process dies, beanstalkd releases the jobs it held when
//! their time-to-run ends (the worker puts failed records with its `job_ttr`): nothing is
//! lost, they are only invisible to other admin commands until then.

use std::collections::HashSet;
use std::time::Duration;

use crate::job::{decode_parts, Envelope, Job, JobError};
use crate::tubes::Tubes;
use beanstalk::{Client, Error as BeanstalkError};

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("beanstalkd at {addr}: {source}")]
    Queue {
        addr: String,
        #[source]
        source: BeanstalkError,
    },
    #[error("beanstalkd at {addr}: job {id}: {source}")]
    Job {
        addr: String,
        id: u64,
        #[source]
        source: JobError,
    },
}

/// Wraps a beanstalk error with the server it came from.
fn at(addr: &str) -> impl Fn(BeanstalkError) -> ScanError + '_ {
    move |source| ScanError::Queue {
        addr: addr.to_owned(),
        source,
    }
}

/// Connects to one server with the timeouts of an operator's command.
pub async fn connect(addr: &str) -> Result<Client, ScanError> {
    let config = beanstalk::Config {
        connect_timeout: Duration::from_secs(5),
        io_timeout: Some(Duration::from_secs(30)),
        ..beanstalk::Config::default()
    };
    Client::connect_with(addr, config).await.map_err(at(addr))
}

/// Default for `--limit`: most jobs one command reserves per server.
pub const DEFAULT_LIMIT: usize = 100_000;

/// One reserved job.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    /// The envelope, or why the body could not be read (such jobs are only ever released).
    pub envelope: Result<Envelope, String>,
    /// Deleted by the command; not released by [`Batch::finish`].
    pub done: bool,
}

/// Jobs reserved from one tube on one server.
pub struct Batch {
    pub addr: String,
    pub tube: String,
    pub client: Client,
    pub entries: Vec<Entry>,
    /// Why enumeration stopped before the tube was empty, if it did.
    pub incomplete: Option<String>,
}

impl Batch {
    /// Reserves up to `limit` jobs from `tube` on `addr`.
    pub async fn reserve(addr: &str, tube: &str, limit: usize) -> Result<Batch, ScanError> {
        let mut client = connect(addr).await?;
        client.watch(tube).await.map_err(at(addr))?;
        client.ignore("default").await.map_err(at(addr))?;
        let mut batch = Batch {
            addr: addr.to_owned(),
            tube: tube.to_owned(),
            client,
            entries: Vec::new(),
            incomplete: None,
        };
        let mut seen = HashSet::new();
        loop {
            if batch.entries.len() >= limit {
                batch.incomplete = Some(format!("stopped at --limit {limit}"));
                break;
            }
            match batch.client.reserve_with_timeout(Duration::ZERO).await {
                Ok(job) => {
                    if !seen.insert(job.id) {
                        // Its time-to-run ran out while we held it and we reserved it again.
                        batch.incomplete =
                            Some("a job's time-to-run ran out during the scan".into());
                        break;
                    }
                    let envelope = decode_parts(&job.body)
                        .map(|(e, _)| e)
                        .map_err(|e| e.to_string());
                    batch.entries.push(Entry {
                        id: job.id,
                        envelope,
                        done: false,
                    });
                }
                Err(BeanstalkError::TimedOut) => break,
                Err(BeanstalkError::DeadlineSoon) => {
                    batch.incomplete =
                        Some("a reserved job's time-to-run is about to run out".into());
                    break;
                }
                Err(e) => {
                    // Whatever we reserved returns to the tube when the connection closes.
                    return Err(at(addr)(e));
                }
            }
        }
        Ok(batch)
    }

    /// The whole job (envelope and message) of a reserved entry.
    pub async fn fetch(&mut self, id: u64) -> Result<Job, ScanError> {
        let job = self.client.peek(id).await.map_err(at(&self.addr))?;
        Job::decode(&job.body).map_err(|source| ScanError::Job {
            addr: self.addr.clone(),
            id,
            source,
        })
    }

    /// Puts `body` into `tube` on this server (through the reserving connection).
    pub async fn put(
        &mut self,
        tube: &str,
        body: &[u8],
        pri: u32,
        ttr: Duration,
    ) -> Result<u64, ScanError> {
        let addr = self.addr.clone();
        self.client.use_tube(tube).await.map_err(at(&addr))?;
        self.client
            .put(body, pri, Duration::ZERO, ttr)
            .await
            .map_err(at(&addr))
    }

    /// Deletes a reserved entry and marks it done.
    pub async fn delete(&mut self, index: usize) -> Result<(), ScanError> {
        let id = self.entries[index].id;
        self.client.delete(id).await.map_err(at(&self.addr))?;
        self.entries[index].done = true;
        Ok(())
    }

    /// Releases every entry not done (priority 0, no delay) and closes the connection.
    /// Errors are counted, not returned: an unreleased job comes back after its TTR anyway.
    pub async fn finish(mut self) -> usize {
        let mut failed = 0;
        for entry in self.entries.iter().filter(|e| !e.done) {
            if let Err(e) = self.client.release(entry.id, 0, Duration::ZERO).await {
                tracing::warn!(beanstalkd = %self.addr, job = entry.id, error = %e, "cannot release; it returns after its time-to-run");
                failed += 1;
            }
        }
        failed
    }
}

/// A job seen by [`peek_recent`].
#[derive(Debug, Clone)]
pub struct Peeked {
    pub id: u64,
    pub tube: String,
    /// `ready`, `delayed`, `reserved` or `buried`.
    pub state: String,
    /// Seconds since the job was put.
    pub age: u64,
    pub envelope: Envelope,
}

/// The newest job id on this server: puts a small job into the probe tube
/// ([`Tubes::probe`]) and deletes it.
pub async fn newest_id(client: &mut Client, tubes: &Tubes) -> Result<u64, BeanstalkError> {
    let before = client.used_tube().to_owned();
    client.use_tube(tubes.probe()).await?;
    let id = client
        .put(
            b"probe",
            0,
            Duration::from_secs(3600),
            Duration::from_secs(1),
        )
        .await?;
    client.delete(id).await?;
    client.use_tube(&before).await?;
    Ok(id)
}

/// Looks at job ids `newest-window .. newest` on `addr` and returns the hedwig jobs among
/// them in `tubes` (all tubes when empty), newest first. `stats-job` + `peek` per job:
/// reserves nothing, so workers are not disturbed.
pub async fn peek_recent(
    addr: &str,
    names: &Tubes,
    window: u64,
    tubes: &[&str],
) -> Result<Vec<Peeked>, ScanError> {
    let mut client = connect(addr).await?;
    let newest = newest_id(&mut client, names).await.map_err(at(addr))?;
    let mut found = Vec::new();
    for id in (newest.saturating_sub(window)..newest).rev() {
        if id == 0 {
            break;
        }
        let stats = match client.stats_job(id).await {
            Ok(stats) => stats,
            Err(BeanstalkError::NotFound) => continue,
            Err(e) => return Err(at(addr)(e)),
        };
        let tube = stats.tube().unwrap_or_default().to_owned();
        if !tubes.is_empty() && !tubes.contains(&tube.as_str()) {
            continue;
        }
        let job = match client.peek(id).await {
            Ok(job) => job,
            Err(BeanstalkError::NotFound) => continue,
            Err(e) => return Err(at(addr)(e)),
        };
        if let Ok((envelope, _)) = decode_parts(&job.body) {
            found.push(Peeked {
                id,
                tube,
                state: stats.state().unwrap_or_default().to_owned(),
                age: stats.age().unwrap_or(0),
                envelope,
            });
        }
    }
    Ok(found)
}
