//! `postoffice purge`: delete failed records for good, filtered like `failed`.
//!
//! Asks for confirmation unless `--yes`; without `--yes` and with no terminal to ask on, it
//! refuses before touching anything. Recipients of a record that the filter does not select
//! (another `--domain`) stay in the failed tube as a new record.

use serde::Serialize;

use super::failed::{collect, render_rows, Row, Selected};
use super::filter::Filter;
use super::{AdminError, Target};
use hedwig_queue::event::Outcome;
use hedwig_queue::scan::DEFAULT_LIMIT;

/// Options of `purge`.
#[derive(Debug, Clone, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Delete without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Most failed records read per server.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
}

/// Asks the operator whether to delete these rows.
pub type Ask<'a> = &'a mut (dyn FnMut(&[Row]) -> bool + Send);

/// What `purge` did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// False when the operator said no.
    pub confirmed: bool,
    /// The recipients deleted (or that would have been, when not confirmed).
    pub rows: Vec<Row>,
    pub problems: Vec<String>,
}

/// Deletes what `args.filter` selects. Without `args.yes`, `ask` is shown the rows and
/// decides; no `ask` (no terminal) and no `--yes` is [`AdminError::NeedsConfirmation`].
pub async fn run(
    target: &Target,
    args: &PurgeArgs,
    ask: Option<Ask<'_>>,
) -> Result<Report, AdminError> {
    if !args.yes && ask.is_none() {
        return Err(AdminError::NeedsConfirmation);
    }
    let (selected, mut problems) = collect(target, &args.filter, args.limit).await;
    let rows: Vec<Row> = selected.iter().flat_map(Selected::rows).collect();
    let confirmed = args.yes || rows.is_empty() || ask.is_some_and(|ask| ask(&rows));
    let mut deleted = Vec::new();
    for mut s in selected {
        if confirmed {
            let all_rows = s.rows();
            for (index, _) in std::mem::take(&mut s.picks) {
                let id = s.batch.entries[index].id;
                match purge_one(&mut s, target, &args.filter, index).await {
                    Ok(()) => deleted.extend(all_rows.iter().filter(|r| r.job == id).cloned()),
                    Err(e) => problems.push(format!("job {id}: {e}")),
                }
            }
        }
        s.batch.finish().await;
    }
    Ok(Report {
        confirmed,
        rows: if confirmed { deleted } else { rows },
        problems,
    })
}

async fn purge_one(
    s: &mut Selected,
    target: &Target,
    filter: &Filter,
    index: usize,
) -> Result<(), AdminError> {
    let envelope = match &s.batch.entries[index].envelope {
        Ok(e) => e.clone(),
        Err(e) => return Err(AdminError::Usage(e.clone())),
    };
    let (picked, rest) = filter.split_recipients(&envelope);
    if !rest.is_empty() {
        let job = s.batch.fetch(s.batch.entries[index].id).await?;
        target.keep_failed(&mut s.batch, job, rest).await?;
    }
    target
        .record(
            &mut s.batch,
            "purge",
            &envelope.queue_id,
            &picked,
            Outcome::Purged,
        )
        .await;
    Ok(s.batch.delete(index).await?)
}

impl Report {
    /// Text table, or JSON with `json`.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        }
        if !self.confirmed {
            return "nothing deleted\n".to_owned();
        }
        let mut out = render_rows(&self.rows);
        out.push_str(&format!("{} failed recipients deleted\n", self.rows.len()));
        out
    }
}
