//! `postoffice requeue`: put failed recipients back for delivery.
//!
//! Per selected record: the job goes back to the outbound tube of the same server (or to the
//! held tube, if its host is held) with `rcpt_to` = the selected recipients, `failure`
//! cleared, queue id and history kept. Recipients the filter did not select (another
//! `--domain`) stay in the failed tube as a new record. Only then is the old record deleted,
//! so a crash in between can duplicate a record, never lose one.

use serde::Serialize;

use super::failed::{collect, render_rows, Row, Selected};
use super::filter::Filter;
use super::{AdminError, Target};
use hedwig_core::address::Recipient;
use hedwig_queue::event::Outcome;
use hedwig_queue::scan::DEFAULT_LIMIT;

/// Options of `requeue`.
#[derive(Debug, Clone, clap::Args)]
pub struct RequeueArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Show what would be requeued; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Most failed records read per server.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
}

/// What `requeue` did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// The recipients requeued (or that would be).
    pub rows: Vec<Row>,
    /// Records that could not be requeued, servers that could not be read.
    pub problems: Vec<String>,
}

/// Requeues what `args.filter` selects on every server.
pub async fn run(target: &Target, args: &RequeueArgs) -> Report {
    let (selected, mut problems) = collect(target, &args.filter, args.limit).await;
    let mut rows = Vec::new();
    for mut s in selected {
        if args.dry_run {
            rows.extend(s.rows());
        } else {
            let held = match hedwig_queue::hold::read(&mut s.batch.client, &target.tubes).await {
                Ok(list) => list,
                Err(e) => {
                    problems.push(format!("{}: cannot read the hold list: {e}", s.batch.addr));
                    s.batch.finish().await;
                    continue;
                }
            };
            let all_rows = s.rows();
            for (index, rcpts) in std::mem::take(&mut s.picks) {
                match requeue_one(&mut s, target, &args.filter, index, rcpts, &held).await {
                    Ok(()) => rows.extend(
                        all_rows
                            .iter()
                            .filter(|r| r.job == s.batch.entries[index].id)
                            .cloned(),
                    ),
                    Err(e) => problems.push(format!("job {}: {e}", s.batch.entries[index].id)),
                }
            }
        }
        s.batch.finish().await;
    }
    rows.sort_by(|a, b| (a.at, &a.queue_id).cmp(&(b.at, &b.queue_id)));
    Report {
        dry_run: args.dry_run,
        rows,
        problems,
    }
}

async fn requeue_one(
    s: &mut Selected,
    target: &Target,
    filter: &Filter,
    index: usize,
    rcpts: Vec<Recipient>,
    held: &hedwig_queue::hold::HoldList,
) -> Result<(), AdminError> {
    let id = s.batch.entries[index].id;
    let original = s.batch.fetch(id).await?;
    let rest = filter.split_recipients(&original.envelope).1;
    let mut again = original.clone();
    again.envelope.rcpt_to = rcpts;
    again.envelope.failure = None;
    let tube = if held.is_held(&again.envelope.host) {
        target.tubes.held()
    } else {
        target.tubes.outbound()
    };
    s.batch
        .put(
            tube,
            &again.encode(),
            target.priority_of(&again.envelope),
            target.ttr,
        )
        .await?;
    target.keep_failed(&mut s.batch, original, rest).await?;
    let queue_id = again.envelope.queue_id.clone();
    target
        .record(
            &mut s.batch,
            "requeue",
            &queue_id,
            &again.envelope.rcpt_to,
            Outcome::Requeued,
        )
        .await;
    s.batch.delete(index).await?;
    tracing::info!(queue_id = %again.envelope.queue_id, beanstalkd = %s.batch.addr, tube, "requeued");
    Ok(())
}

impl Report {
    /// Text table, or JSON with `json`.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        }
        let mut out = render_rows(&self.rows);
        let verb = if self.dry_run {
            "would be requeued (dry run)"
        } else {
            "requeued"
        };
        out.push_str(&format!("{} recipients {verb}\n", self.rows.len()));
        out
    }
}
