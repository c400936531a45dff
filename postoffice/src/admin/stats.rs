//! `postoffice stats`: per server and tube, the ready / delayed / reserved / buried counts and
//! the age of the oldest message; per sending host, the failed records and the queued jobs;
//! and, when the config names a ledger store, per sending host the ledger's counts by outcome
//! over the last `--hours` hours (messages queued, recipients sent, deferred, bounced, ...).
//!
//! Limits: "oldest" is the oldest of the jobs beanstalkd shows first (`peek-ready` gives the
//! most urgent ready job, `peek-delayed` the next to wake, `peek-buried` the oldest buried),
//! which is the oldest in practice because hedwig puts with one priority. Per-host counts of
//! the failed tube are exact (up to `--limit` records); for the outbound and held tubes they
//! come from peeking at the most recent `--scan` job ids, so a longer queue is sampled.

use std::collections::BTreeMap;

use beanstalk::{Client, Error as BeanstalkError};
use serde::Serialize;

use super::{at, cell, connect, AdminError, Target};
use hedwig_queue::scan::{peek_recent, Batch, DEFAULT_LIMIT};

/// Options of `stats`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// How many of the most recent job ids to peek at per server for per-host counts of the
    /// outbound and held tubes (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub scan: u64,
    /// Most failed records read per server.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
    /// Hours of the ledger's per-host counts (0: skip the ledger).
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
}

/// The ledger's per-host counts by outcome over the last `hours` hours.
#[derive(Debug, Default, Serialize)]
pub struct LedgerCounts {
    pub hours: u64,
    /// Host, then outcome (`queued` counts messages; the others count recipients).
    pub by_host: BTreeMap<String, BTreeMap<String, u64>>,
    /// Why the ledger could not be read (no store configured, store down).
    pub error: Option<String>,
}

impl LedgerCounts {
    /// The counts from `rows` (`(host, outcome, count)`, as `Store::hourly_totals` gives).
    pub fn from_rows(hours: u64, rows: Vec<(String, String, u64)>) -> LedgerCounts {
        let mut by_host: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (host, outcome, count) in rows {
            *by_host.entry(host).or_default().entry(outcome).or_default() += count;
        }
        LedgerCounts {
            hours,
            by_host,
            error: None,
        }
    }
}

/// One tube's counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TubeStats {
    pub tube: String,
    pub ready: u64,
    pub delayed: u64,
    pub reserved: u64,
    pub buried: u64,
    /// Seconds since the oldest job shown first was put; none when the tube is empty.
    pub oldest_age: Option<u64>,
}

/// One server's numbers.
#[derive(Debug, Default, Serialize)]
pub struct ServerStats {
    pub server: String,
    pub tubes: Vec<TubeStats>,
    /// Failed records per sending host (exact up to `--limit`).
    pub failed_by_host: BTreeMap<String, u64>,
    /// Jobs per tube and sending host among the most recent `scanned` job ids.
    pub queued_by_host: BTreeMap<String, BTreeMap<String, u64>>,
    pub scanned: u64,
    pub error: Option<String>,
}

/// What `stats` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub servers: Vec<ServerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerCounts>,
}

/// Collects the numbers from every server; a server that fails gets its `error` set.
pub async fn run(target: &Target, args: &StatsArgs) -> Report {
    let mut report = Report::default();
    for addr in &target.servers {
        let mut s = ServerStats {
            server: addr.clone(),
            ..ServerStats::default()
        };
        if let Err(e) = collect(addr, args, target, &mut s).await {
            s.error = Some(e.to_string());
        }
        report.servers.push(s);
    }
    report
}

async fn collect(
    addr: &str,
    args: &StatsArgs,
    target: &Target,
    s: &mut ServerStats,
) -> Result<(), AdminError> {
    let mut client = connect(addr).await?;
    let mut tubes = client.list_tubes().await.map_err(at(addr))?;
    for known in [
        target.tubes.outbound(),
        target.tubes.failed(),
        target.tubes.held(),
    ] {
        if !tubes.iter().any(|t| t == known) {
            tubes.push(known.to_owned());
        }
    }
    tubes.retain(|t| t != "default" && t != target.tubes.probe());
    tubes.sort();
    for tube in tubes {
        s.tubes
            .push(tube_stats(&mut client, &tube).await.map_err(at(addr))?);
    }
    let batch = Batch::reserve(addr, target.tubes.failed(), args.limit).await?;
    for entry in &batch.entries {
        if let Ok(e) = &entry.envelope {
            *s.failed_by_host.entry(e.host.clone()).or_default() += 1;
        }
    }
    batch.finish().await;
    if args.scan > 0 {
        let tubes = [target.tubes.outbound(), target.tubes.held()];
        for p in peek_recent(addr, &target.tubes, args.scan, &tubes).await? {
            *s.queued_by_host
                .entry(p.tube)
                .or_default()
                .entry(p.envelope.host)
                .or_default() += 1;
        }
        s.scanned = args.scan;
    }
    Ok(())
}

/// One tube's counts and the age of its oldest job (counts 0 for a tube that does not exist).
pub async fn tube_stats(client: &mut Client, tube: &str) -> Result<TubeStats, BeanstalkError> {
    let stats = match client.stats_tube(tube).await {
        Ok(stats) => Some(stats),
        Err(BeanstalkError::NotFound) => None,
        Err(e) => return Err(e),
    };
    let count = |f: fn(&beanstalk::Stats) -> Option<u64>| stats.as_ref().and_then(f).unwrap_or(0);
    let mut t = TubeStats {
        tube: tube.to_owned(),
        ready: count(beanstalk::Stats::current_jobs_ready),
        delayed: count(beanstalk::Stats::current_jobs_delayed),
        reserved: count(beanstalk::Stats::current_jobs_reserved),
        buried: count(beanstalk::Stats::current_jobs_buried),
        oldest_age: None,
    };
    if stats.is_none() {
        return Ok(t);
    }
    client.use_tube(tube).await?;
    for which in 0..3 {
        let peeked = match which {
            0 => client.peek_ready().await,
            1 => client.peek_delayed().await,
            _ => client.peek_buried().await,
        };
        let id = match peeked {
            Ok(job) => job.id,
            Err(BeanstalkError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        match client.stats_job(id).await {
            Ok(job) => {
                let age = job.age().unwrap_or(0);
                t.oldest_age = Some(t.oldest_age.map_or(age, |a| a.max(age)));
            }
            Err(BeanstalkError::NotFound) => {} // taken meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(t)
}

fn age(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
    }
}

impl Report {
    /// Text, or JSON with `json`.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        }
        let mut out = String::new();
        for s in &self.servers {
            out.push_str(&format!("beanstalkd {}\n", s.server));
            if let Some(e) = &s.error {
                out.push_str(&format!("  error: {e}\n"));
            }
            if !s.tubes.is_empty() {
                out.push_str(&format!(
                    "  {:<24} {:>8} {:>8} {:>8} {:>8}  OLDEST\n",
                    "TUBE", "READY", "DELAYED", "RESERVED", "BURIED"
                ));
            }
            for t in &s.tubes {
                out.push_str(&format!(
                    "  {:<24} {:>8} {:>8} {:>8} {:>8}  {}\n",
                    cell(&t.tube, 24),
                    t.ready,
                    t.delayed,
                    t.reserved,
                    t.buried,
                    age(t.oldest_age)
                ));
            }
            if !s.failed_by_host.is_empty() {
                out.push_str("  failed records by host:\n");
                for (host, n) in &s.failed_by_host {
                    out.push_str(&format!("    {host:<40} {n:>8}\n"));
                }
            }
            for (tube, hosts) in &s.queued_by_host {
                out.push_str(&format!(
                    "  {tube} by host (among the last {} job ids):\n",
                    s.scanned
                ));
                for (host, n) in hosts {
                    out.push_str(&format!("    {host:<40} {n:>8}\n"));
                }
            }
        }
        if let Some(l) = &self.ledger {
            out.push_str(&format!("ledger, last {} hours, by host\n", l.hours));
            if let Some(e) = &l.error {
                out.push_str(&format!("  not read: {e}\n"));
            } else if l.by_host.is_empty() {
                out.push_str("  nothing recorded\n");
            } else {
                const COLUMNS: [&str; 6] =
                    ["queued", "sent", "deferred", "bounced", "expired", "failed"];
                out.push_str(&format!("  {:<40}", "HOST"));
                for c in COLUMNS {
                    out.push_str(&format!(" {:>9}", c.to_uppercase()));
                }
                out.push_str("  OTHER\n");
                for (host, outcomes) in &l.by_host {
                    out.push_str(&format!("  {:<40}", cell(host, 40)));
                    for c in COLUMNS {
                        out.push_str(&format!(" {:>9}", outcomes.get(c).copied().unwrap_or(0)));
                    }
                    let other: Vec<String> = outcomes
                        .iter()
                        .filter(|(o, _)| !COLUMNS.contains(&o.as_str()))
                        .map(|(o, n)| format!("{}={n}", cell(o, 20)))
                        .collect();
                    out.push_str(&format!("  {}\n", other.join(" ")));
                }
            }
        }
        out
    }
}
