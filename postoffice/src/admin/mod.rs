//! Queue administration: the `postoffice` subcommands an operator runs against a live system.
//!
//! One file per command: [`stats`], [`failed`], [`requeue`], [`show`], [`purge`], [`hold`]
//! (`hold` and `release`). Shared piece: [`filter`] (which failed records a command acts on).
//! Reading the tubes without disturbing the workers, and the tube names, are the
//! `hedwig-queue` crate's (`hedwig_queue::scan`, `hedwig_queue::tubes`).
//!
//! The commands that change a message (`requeue`, `release`, `purge`) record what they did in
//! the delivery ledger (`Target::record`): per recipient an event `requeued`, `released` or
//! `purged`, naming the command and the user, before the job they acted on is deleted.
//! `hold` moves no job (workers move a held host's jobs, and record `held`).
//!
//! Every command acts on every configured beanstalkd server. Each returns its report as a
//! value and renders it as text or JSON; the binary only prints.
//! How the failed tube is read while workers run: see `hedwig_queue::scan`.

pub mod failed;
pub mod filter;
pub mod hold;
pub mod purge;
pub mod requeue;
pub mod show;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use beanstalk::Client;

use hedwig_queue::event::{Event, Outcome, RecipientEvent, What};
use hedwig_queue::Tubes;

use crate::config::Config;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("beanstalkd at {addr}: {source}")]
    Queue {
        addr: String,
        #[source]
        source: beanstalk::Error,
    },
    #[error("hold list at {addr}: {source}")]
    Holds {
        addr: String,
        #[source]
        source: hedwig_queue::hold::HoldsError,
    },
    #[error(transparent)]
    Scan(#[from] hedwig_queue::scan::ScanError),
    #[error("refusing to delete without confirmation: stdin is not a terminal; pass --yes")]
    NeedsConfirmation,
    #[error("{0}")]
    Usage(String),
}

/// What every admin command needs from the configuration.
#[derive(Debug, Clone)]
pub struct Target {
    /// The beanstalkd servers, `host:port` each.
    pub servers: Vec<String>,
    /// The tube names (`tube_prefix`).
    pub tubes: Tubes,
    /// Priority and time-to-run of jobs put back for delivery (a job in a lane: the lane's
    /// base priority, [`Target::priority_of`]).
    pub priority: u32,
    pub ttr: Duration,
    /// The lanes, for the priority of a job put back.
    pub lanes: std::collections::BTreeMap<String, hedwig_queue::lane::Lane>,
    pub default_lane: String,
    /// Put ledger events (`requeued`, `released`, `purged`) into the events tube (the
    /// `events` setting).
    pub events: bool,
    /// The console user acting (`by` of the ledger events is then `console <command>
    /// (<user>)`); `None`: a command, named with the shell's user.
    pub operator: Option<String>,
}

impl Target {
    /// From the server's config; `servers` (from `--beanstalkd`) replaces the configured list
    /// when not empty. An error when the tube prefix is not valid.
    pub fn new(config: &Config, servers: &[String]) -> Result<Target, AdminError> {
        let servers = if servers.is_empty() {
            config.beanstalkd.clone()
        } else {
            servers
                .iter()
                .flat_map(|s| hedwig_core::config::split_list(s))
                .collect()
        };
        Ok(Target {
            servers,
            tubes: config.tubes().map_err(AdminError::Usage)?,
            priority: config.job_priority,
            ttr: config.job_ttr,
            lanes: config.lanes.clone(),
            default_lane: config.default_lane.clone(),
            events: config.events,
            operator: None,
        })
    }
}

impl Target {
    /// The priority a job put back for delivery gets: its lane's base (no fairness offset: an
    /// operator's requeue is not a burst), or `job_priority` for a lane not configured here.
    pub fn priority_of(&self, envelope: &hedwig_queue::job::Envelope) -> u32 {
        let lane = envelope.lane.as_deref().unwrap_or(&self.default_lane);
        self.lanes
            .get(lane)
            .map_or(self.priority, |l| l.base(self.priority))
    }

    /// What `purge` and `requeue` leave of a failed job they act on for some recipients only:
    /// `job` again in the failed tube, with `rest` (the recipients the filter did not pick) as
    /// its recipients. Nothing when `rest` is empty.
    pub(crate) async fn keep_failed(
        &self,
        batch: &mut hedwig_queue::scan::Batch,
        mut job: hedwig_queue::Job,
        rest: Vec<hedwig_core::address::Recipient>,
    ) -> Result<(), AdminError> {
        if rest.is_empty() {
            return Ok(());
        }
        job.envelope.rcpt_to = rest;
        let failed = self.tubes.failed();
        batch
            .put(failed, &job.encode(), self.priority, self.ttr)
            .await?;
        Ok(())
    }
}

/// Whether a ledger event failed already in this process (warned once, not per message).
static LEDGER_FAILED: AtomicBool = AtomicBool::new(false);

impl Target {
    /// Records an operator's action on `recipients` of message `queue_id` in the ledger: one
    /// `Recipient` event each with `outcome`, `by` naming `command` and the user, put into the
    /// events tube of the batch's server through its connection, before the caller deletes
    /// the job it acted on. A failure is warned about once and otherwise ignored: the ledger
    /// never stops an operator.
    pub(crate) async fn record(
        &self,
        batch: &mut hedwig_queue::scan::Batch,
        command: &str,
        queue_id: &str,
        recipients: &[hedwig_core::address::Recipient],
        outcome: Outcome,
    ) {
        if !self.events || recipients.is_empty() {
            return;
        }
        let by = match &self.operator {
            Some(user) => format!("console {command} ({})", cell(user, 64)),
            None => operator(command),
        };
        let events: Vec<Event> = recipients
            .iter()
            .map(|rcpt| {
                Event::now(
                    queue_id,
                    What::Recipient(RecipientEvent {
                        recipient: rcpt.to_string(),
                        outcome,
                        mx: None,
                        ip: None,
                        tls: None,
                        code: None,
                        dsn: None,
                        reply: format!("{outcome} by an operator ({by})"),
                        attempt: None,
                        by: Some(by.clone()),
                        list_id: None,
                        source_ip: None,
                        pool: None,
                        sender_domain: None,
                    }),
                )
            })
            .collect();
        let limits = hedwig_queue::emit::Limits::default();
        for body in hedwig_queue::emit::encode_batches(&events, &limits) {
            let put = batch
                .put(self.tubes.events(), &body, limits.priority, limits.ttr)
                .await;
            if let Err(e) = put {
                if !LEDGER_FAILED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "ledger events cannot be queued; carrying on without them");
                }
                return;
            }
        }
    }
}

/// `by` of an operator's event: `postoffice <command>`, and the user who ran it
/// (`$SUDO_USER`, else `$USER`) when known.
pub fn operator(command: &str) -> String {
    let user = ["SUDO_USER", "USER"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|user| cell(user.trim(), 64))
        .find(|user| !user.is_empty());
    match user {
        Some(user) => format!("postoffice {command} ({user})"),
        None => format!("postoffice {command}"),
    }
}

/// Connects to one server with admin timeouts.
pub async fn connect(addr: &str) -> Result<Client, AdminError> {
    Ok(hedwig_queue::scan::connect(addr).await?)
}

/// Wraps a beanstalk error with the server it came from.
pub(crate) fn at(addr: &str) -> impl Fn(beanstalk::Error) -> AdminError + '_ {
    move |source| AdminError::Queue {
        addr: addr.to_owned(),
        source,
    }
}

/// RFC 3339 UTC, seconds.
pub fn format_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The message's header section: everything up to the first empty line, at most `max` bytes.
pub fn headers(message: &[u8], max: usize) -> String {
    let end = [&b"\r\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|sep| {
            message
                .windows(sep.len())
                .position(|w| w == *sep)
                .map(|p| p + sep.len() / 2)
        })
        .min()
        .unwrap_or(message.len());
    let head = &message[..end.min(max)];
    String::from_utf8_lossy(head).replace("\r\n", "\n")
}

/// Text for one cell of a table: one line, at most `max` characters.
pub(crate) fn cell(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_ends_at_the_blank_line() {
        assert_eq!(
            headers(b"Subject: a\r\nFrom: b\r\n\r\nbody\r\n\r\nmore", 1000),
            "Subject: a\nFrom: b\n"
        );
        assert_eq!(headers(b"Subject: a\n\nbody", 1000), "Subject: a\n");
        assert_eq!(headers(b"Subject: no body", 1000), "Subject: no body");
        assert_eq!(headers(b"Subject: long\r\n\r\n", 4), "Subj");
    }

    #[test]
    fn cells_are_one_bounded_line() {
        assert_eq!(cell("550 5.7.1\r\nblocked", 100), "550 5.7.1  blocked");
        assert_eq!(cell("abcdef", 4), "abc…");
    }

    #[test]
    fn time_is_rfc3339() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }
}
