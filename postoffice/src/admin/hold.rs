//! `postoffice hold [HOST]` and `postoffice release HOST`: stop and resume delivery of one
//! sending host's mail without losing it.
//!
//! `hold HOST` adds the host to the hold list on every server ([`crate::holds`]). From then
//! on post offices queue its new mail in the held tube (after at most
//! [`CACHE_FOR`](hedwig_queue::hold::CACHE_FOR)), and workers move its already queued jobs
//! there when they reserve them. `hold` without a host prints the list.
//!
//! `release HOST` removes the host from the list, then moves its jobs from the held tube back
//! to the outbound tube of the same server: once at once, and again after `--settle`
//! (default: the cache time plus a second), for mail that a post office or worker with a
//! stale list held meanwhile. Each move is put-then-delete: a crash can duplicate a job,
//! never lose one.

use std::time::Duration;

use hedwig_queue::event::Outcome;
use hedwig_queue::hold::HoldList;
use serde::Serialize;

use super::{connect, AdminError, Target};
use hedwig_queue::scan::{Batch, DEFAULT_LIMIT};

/// Options of `hold`.
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// The sending host (fqdn) to hold; none: list the held hosts.
    pub host: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReleaseArgs {
    /// The sending host (fqdn) to release.
    pub host: String,
    /// Wait between the two sweeps of the held tube (`0s`: sweep once).
    /// The default is `hedwig_queue::hold::CACHE_FOR` plus a second.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "6s")]
    pub settle: Duration,
    /// Most held jobs read per server and sweep.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `hold` or `release` did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The held hosts afterwards (union over the servers that answered).
    pub held: Vec<String>,
    /// `release`: jobs moved back to the outbound tube.
    pub moved: u64,
    pub problems: Vec<String>,
    #[serde(skip)]
    pub message: String,
}

async fn change_everywhere(
    target: &Target,
    change: impl Fn(&mut HoldList) -> Result<bool, hedwig_queue::hold::HoldError>,
) -> Report {
    let mut report = Report::default();
    let mut union = HoldList::new();
    for addr in &target.servers {
        let result = async {
            let mut client = connect(addr).await?;
            hedwig_queue::hold::update(&mut client, &target.tubes, &change)
                .await
                .map_err(|source| AdminError::Holds {
                    addr: addr.clone(),
                    source,
                })
        }
        .await;
        match result {
            Ok(list) => union = union.union(&list),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    report.held = union.hosts().map(str::to_owned).collect();
    report
}

/// `hold`: adds `args.host` on every server, or lists the held hosts.
pub async fn hold(target: &Target, args: &HoldArgs) -> Result<Report, AdminError> {
    let Some(host) = &args.host else {
        let mut report = change_everywhere(target, |_| Ok(false)).await;
        report.message = if report.held.is_empty() {
            "no host is held\n".into()
        } else {
            format!("held: {}\n", report.held.join(" "))
        };
        return Ok(report);
    };
    let host = hedwig_core::key::normalize_fqdn(host)
        .map_err(|e| AdminError::Usage(format!("{host}: {e}")))?;
    let mut report = change_everywhere(target, |list| list.hold(&host)).await;
    report.message = format!(
        "{host} is held: new mail waits in tube {}; `postoffice release {host}` resumes delivery\n",
        target.tubes.held()
    );
    Ok(report)
}

/// `release`: removes `args.host` on every server and moves its held jobs back.
pub async fn release(target: &Target, args: &ReleaseArgs) -> Result<Report, AdminError> {
    let host = hedwig_core::key::normalize_fqdn(&args.host)
        .map_err(|e| AdminError::Usage(format!("{}: {e}", args.host)))?;
    let mut report = change_everywhere(target, |list| Ok(list.release(&host))).await;
    sweep(target, &host, args.limit, &mut report).await;
    if !args.settle.is_zero() {
        tokio::time::sleep(args.settle).await;
        sweep(target, &host, args.limit, &mut report).await;
    }
    report.message = format!(
        "{host} released: {} held jobs moved back to tube {}\n",
        report.moved,
        target.tubes.outbound()
    );
    Ok(report)
}

/// Moves `host`'s jobs from the held tube to the outbound tube on every server.
pub async fn sweep(target: &Target, host: &str, limit: usize, report: &mut Report) {
    for addr in &target.servers {
        let mut batch = match Batch::reserve(addr, target.tubes.held(), limit).await {
            Ok(batch) => batch,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        if let Some(why) = &batch.incomplete {
            report
                .problems
                .push(format!("{addr}: held tube sweep incomplete: {why}"));
        }
        for index in 0..batch.entries.len() {
            let envelope = match &batch.entries[index].envelope {
                Ok(e) if hedwig_queue::hold::normalize(&e.host) == host => e.clone(),
                _ => continue,
            };
            let id = batch.entries[index].id;
            let moved = async {
                let job = batch.client.peek(id).await.map_err(super::at(addr))?;
                batch
                    .put(
                        target.tubes.outbound(),
                        &job.body,
                        target.priority_of(&envelope),
                        target.ttr,
                    )
                    .await?;
                target
                    .record(
                        &mut batch,
                        "release",
                        &envelope.queue_id,
                        &envelope.rcpt_to,
                        Outcome::Released,
                    )
                    .await;
                Ok::<(), AdminError>(batch.delete(index).await?)
            }
            .await;
            match moved {
                Ok(()) => report.moved += 1,
                Err(e) => report.problems.push(format!("job {id}: {e}")),
            }
        }
        batch.finish().await;
    }
}

impl Report {
    /// Text, or JSON with `json`.
    pub fn render(&self, json: bool) -> String {
        if json {
            serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
        } else {
            self.message.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_settle_outlasts_the_cache() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: super::ReleaseArgs,
        }
        let cli = Cli::parse_from(["x", "web1.example.com"]);
        assert!(cli.args.settle > hedwig_queue::hold::CACHE_FOR);
    }
}
