//! Reading tubes while workers run.
//!
//! - [`Batch`]: reserves every job of a tube no worker watches (the failed and held tubes),
//!   up to a limit, so that a command can act on them; [`Batch::finish`] releases the rest.
//!   Only the envelopes are kept in memory; a job's message is fetched again with `peek` when
//!   a command needs it.
//! - [`peek_recent`]: looks at the most recent job ids with `stats-job` and `peek`, in any
//!   tube and state, without reserving anything. It can only see jobs whose id is within the
//!   window, so it is a sample of a long queue, not a census.

use std::collections::HashSet;
use std::time::Duration;

use beanstalk::{Client, Error as BeanstalkError};
use hedwig_core::job::{decode_parts, Envelope, Job};

use super::{at, connect, AdminError};

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
    pub async fn reserve(addr: &str, tube: &str, limit: usize) -> Result<Batch, AdminError> {
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
    pub async fn fetch(&mut self, id: u64) -> Result<Job, AdminError> {
        let job = self.client.peek(id).await.map_err(at(&self.addr))?;
        Job::decode(&job.body).map_err(|e| AdminError::Usage(format!("job {id}: {e}")))
    }

    /// Puts `body` into `tube` on this server (through the reserving connection).
    pub async fn put(
        &mut self,
        tube: &str,
        body: &[u8],
        pri: u32,
        ttr: Duration,
    ) -> Result<u64, AdminError> {
        let addr = self.addr.clone();
        self.client.use_tube(tube).await.map_err(at(&addr))?;
        self.client
            .put(body, pri, Duration::ZERO, ttr)
            .await
            .map_err(at(&addr))
    }

    /// Deletes a reserved entry and marks it done.
    pub async fn delete(&mut self, index: usize) -> Result<(), AdminError> {
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

/// Tube of the probe job [`peek_recent`] puts to learn the newest job id.
pub const TUBE_PROBE: &str = "hedwig-admin";

/// The newest job id on this server: puts a small job into [`TUBE_PROBE`] and deletes it.
pub async fn newest_id(client: &mut Client) -> Result<u64, BeanstalkError> {
    let before = client.used_tube().to_owned();
    client.use_tube(TUBE_PROBE).await?;
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
    window: u64,
    tubes: &[&str],
) -> Result<Vec<Peeked>, AdminError> {
    let mut client = connect(addr).await?;
    let newest = newest_id(&mut client).await.map_err(at(addr))?;
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
