//! `postoffice suppress list|add|remove`: the suppression list in a terminal (or JSON with
//! `--json`), on the store the config's `ledger.url` names. Intake picks changes up within
//! `suppression.refresh`.
//!
//! Not here: the queries (`hedwig_ledger::suppress`).

use std::fmt::Write as _;

use hedwig_ledger::suppress::{Source, Suppression, SuppressionFilter, GLOBAL};
use hedwig_ledger::{Store, StoreError};

use super::api::{check_list, check_list_id, check_recipient, check_scope};

/// `postoffice suppress ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SuppressCommand {
    /// List entries that hold now (newest first).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Most entries listed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Also entries that ran out and are not pruned yet.
        #[arg(long)]
        expired: bool,
        /// Print JSON (`{"suppressions": [...]}`, as the API's).
        #[arg(long)]
        json: bool,
    },
    /// Add (or replace) an entry.
    Add {
        /// The address.
        recipient: String,
        /// A sender domain, or `*` for every sender.
        #[arg(long, default_value = GLOBAL)]
        scope: String,
        /// Only the mail of this list (its `List-Id:`, news.example.com) from the scope.
        #[arg(long, value_name = "LIST_ID")]
        list: Option<String>,
        #[arg(long, default_value = "added by an operator")]
        reason: String,
        /// How long it lasts (`30d`); without it, or with --permanent, it is permanent.
        #[arg(long, conflicts_with = "permanent")]
        expires: Option<String>,
        #[arg(long)]
        permanent: bool,
    },
    /// Remove entries (at least one filter).
    Remove {
        /// The address (as a positional argument or --recipient).
        #[arg(value_name = "ADDRESS")]
        address: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Filters of `list` and `remove`.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    #[arg(long = "recipient", value_name = "ADDRESS")]
    pub recipient: Option<String>,
    /// A sender domain, or `*` (and the entries of its lists, unless --list says otherwise).
    #[arg(long)]
    pub scope: Option<String>,
    /// Only the entries of this list id, or `none`: only entries of a whole scope.
    #[arg(long, value_name = "LIST_ID|none")]
    pub list: Option<String>,
    /// auto, operator or complaint.
    #[arg(long)]
    pub source: Option<String>,
}

/// Why a command cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FilterArgs {
    fn filter(&self, recipient: Option<&str>) -> Result<SuppressionFilter, CliError> {
        let usage = |name: &str, e: String| CliError::Usage(format!("--{name}: {e}"));
        let recipient = recipient.or(self.recipient.as_deref());
        Ok(SuppressionFilter {
            recipient: recipient
                .map(|r| check_recipient(r).map_err(|e| usage("recipient", e)))
                .transpose()?,
            scope: self
                .scope
                .as_deref()
                .map(|s| check_scope(s).map_err(|e| usage("scope", e)))
                .transpose()?,
            source: self
                .source
                .as_deref()
                .map(|s| {
                    Source::parse(s)
                        .ok_or_else(|| usage("source", "one of auto, operator, complaint".into()))
                })
                .transpose()?,
            list: self
                .list
                .as_deref()
                .map(|l| check_list(l).map_err(|e| usage("list", e)))
                .transpose()?
                .unwrap_or_default(),
            limit: None,
        })
    }
}

/// Runs `command` on `store`; what to print, and whether it did what was asked (exit 0).
pub async fn run(store: &Store, command: &SuppressCommand) -> Result<(String, bool), CliError> {
    let now = crate::ledger::now_ms();
    match command {
        SuppressCommand::List {
            filter,
            limit,
            expired,
            json,
        } => {
            let mut f = filter.filter(None)?;
            f.limit = Some(*limit);
            let entries = store.list_suppressions(&f, now, *expired).await?;
            let out = if *json {
                let body = serde_json::json!({ "suppressions": entries });
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                )
            } else {
                render(&entries)
            };
            Ok((out, true))
        }
        SuppressCommand::Add {
            recipient,
            scope,
            list,
            reason,
            expires,
            permanent: _,
        } => {
            let list_id = list
                .as_deref()
                .map(|l| check_list_id(l).map_err(|e| CliError::Usage(format!("--list: {e}"))))
                .transpose()?;
            let recipient = check_recipient(recipient)
                .map_err(|e| CliError::Usage(format!("recipient: {e}")))?;
            let scope = check_scope(scope).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let expires_at = match expires {
                Some(e) => super::parse_expiry(e)
                    .map_err(|e| CliError::Usage(format!("--expires: {e}")))?
                    .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
                None => None,
            };
            let entry = Suppression {
                scope,
                list_id,
                recipient: hedwig_ledger::suppress::normalize(&recipient),
                reason: reason.clone(),
                source: Source::Operator,
                reply: None,
                code: None,
                dsn: None,
                queue_id: None,
                created_at: now,
                expires_at,
            };
            store.add_suppression(&entry).await?;
            Ok((
                format!("added:\n{}", render(std::slice::from_ref(&entry))),
                true,
            ))
        }
        SuppressCommand::Remove { address, filter } => {
            let f = filter.filter(address.as_deref())?;
            if f.is_empty() {
                return Err(CliError::Usage(
                    "give a recipient, --scope, --list LIST_ID or --source (nothing removes the whole list)"
                        .into(),
                ));
            }
            let n = store.remove_suppressions(&f).await?;
            Ok((
                format!("removed {n} entr{}\n", if n == 1 { "y" } else { "ies" }),
                n > 0,
            ))
        }
    }
}

/// Entries as text, one per line.
pub fn render(entries: &[Suppression]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no suppressions\n");
    }
    for e in entries {
        let expires = match e.expires_at {
            Some(ms) => format!("until {}", crate::ledger::cli::when(ms)),
            None => "permanent".into(),
        };
        let _ = write!(
            out,
            "{}  scope {}{}  {}  {}  since {}  {expires}",
            e.recipient,
            e.scope,
            e.list_id
                .as_deref()
                .map(|l| format!("  list {l}"))
                .unwrap_or_default(),
            e.source,
            e.reason,
            crate::ledger::cli::when(e.created_at)
        );
        if let Some(dsn) = &e.dsn {
            let _ = write!(out, "  {dsn}");
        }
        if let Some(reply) = &e.reply {
            let _ = write!(out, "  {reply:?}");
        }
        if let Some(q) = &e.queue_id {
            let _ = write!(out, "  ({q})");
        }
        out.push('\n');
    }
    out
}
