//! `postoffice failed`: list failed records (one row per failed recipient), filtered.
//! Also the shared [`collect`] that `requeue` and `purge` start from.

use serde::Serialize;

use super::filter::Filter;
use super::{cell, format_time, Target};
use hedwig_core::address::Recipient;
use hedwig_queue::scan::{Batch, DEFAULT_LIMIT};

/// Options of `failed`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailedArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Print JSON (an array of rows) for scripts.
    #[arg(long)]
    pub json: bool,
    /// Most failed records read per server.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
}

/// One failed recipient.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    pub server: String,
    pub job: u64,
    pub queue_id: String,
    pub host: String,
    pub from: String,
    pub to: String,
    pub code: Option<u16>,
    pub dsn: Option<String>,
    pub reason: String,
    pub response: String,
    /// Unix seconds of the failure.
    pub at: u64,
    pub time: String,
}

/// The jobs of one server's failed tube that a filter selected.
pub struct Selected {
    pub batch: Batch,
    /// Entry index and the recipients selected in it (never empty).
    pub picks: Vec<(usize, Vec<Recipient>)>,
}

impl Selected {
    /// One row per selected recipient.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (index, rcpts) in &self.picks {
            let entry = &self.batch.entries[*index];
            let Ok(e) = &entry.envelope else { continue };
            let failure = e.failure.as_ref();
            let at = failure.map_or(e.received_at, |f| f.at);
            for rcpt in rcpts {
                rows.push(Row {
                    server: self.batch.addr.clone(),
                    job: entry.id,
                    queue_id: e.queue_id.clone(),
                    host: e.host.clone(),
                    from: e.mail_from.clone(),
                    to: rcpt.to_string(),
                    code: failure.and_then(|f| f.code),
                    dsn: failure.and_then(|f| f.dsn.clone()),
                    reason: failure.map(|f| f.reason.clone()).unwrap_or_default(),
                    response: failure.map(|f| f.response.clone()).unwrap_or_default(),
                    at,
                    time: format_time(at),
                });
            }
        }
        rows
    }
}

/// Reserves the failed tube on every server and selects what `filter` matches. Servers that
/// fail are reported in the second list and skipped.
pub async fn collect(
    target: &Target,
    filter: &Filter,
    limit: usize,
) -> (Vec<Selected>, Vec<String>) {
    let now = hedwig_core::unix_now();
    let mut selected = Vec::new();
    let mut problems = Vec::new();
    for addr in &target.servers {
        match Batch::reserve(addr, target.tubes.failed(), limit).await {
            Ok(batch) => {
                if let Some(why) = &batch.incomplete {
                    problems.push(format!("{addr}: listing incomplete: {why}"));
                }
                let picks = batch
                    .entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, entry)| {
                        let envelope = entry.envelope.as_ref().ok()?;
                        let rcpts = filter.select(envelope, now);
                        (!rcpts.is_empty()).then_some((i, rcpts))
                    })
                    .collect();
                selected.push(Selected { batch, picks });
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    (selected, problems)
}

/// What `failed` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Servers that could not be read, incomplete listings.
    pub problems: Vec<String>,
}

/// Lists the failed recipients `filter` selects on every server, oldest failure first.
pub async fn run(target: &Target, filter: &Filter, limit: usize) -> Report {
    let (selected, mut problems) = collect(target, filter, limit).await;
    let mut rows = Vec::new();
    for s in selected {
        rows.extend(s.rows());
        let addr = s.batch.addr.clone();
        let unreleased = s.batch.finish().await;
        if unreleased > 0 {
            problems.push(format!(
                "{addr}: {unreleased} jobs not released; they return after their time-to-run"
            ));
        }
    }
    rows.sort_by(|a, b| (a.at, &a.queue_id).cmp(&(b.at, &b.queue_id)));
    Report { rows, problems }
}

/// Rows as an aligned text table.
pub fn render_rows(rows: &[Row]) -> String {
    let mut table = vec![[
        "TIME".to_owned(),
        "QUEUE ID".to_owned(),
        "HOST".to_owned(),
        "FROM".to_owned(),
        "TO".to_owned(),
        "CODE".to_owned(),
        "RESPONSE".to_owned(),
    ]];
    for r in rows {
        let code = match (&r.code, &r.dsn) {
            (Some(c), Some(d)) => format!("{c} {d}"),
            (Some(c), None) => c.to_string(),
            (None, Some(d)) => d.clone(),
            (None, None) => r.reason.clone(),
        };
        table.push([
            r.time.clone(),
            r.queue_id.clone(),
            cell(&r.host, 40),
            cell(&r.from, 40),
            cell(&r.to, 40),
            code,
            cell(&r.response, 80),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, w)| format!("{text:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

impl Report {
    /// Text table, or JSON rows with `json`.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(&self.rows).unwrap_or_default() + "\n";
        }
        let mut out = render_rows(&self.rows);
        out.push_str(&format!("{} failed recipients\n", self.rows.len()));
        out
    }
}
