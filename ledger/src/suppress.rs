//! The suppression list (issue 14, docs/suppression.md): addresses mail is not sent to, per
//! sender domain or for every sender, with why, since when and until when; an entry may hold
//! for one mailing list (`List-Id:`, RFC 2919) of its scope only (issue 19: a one-click
//! unsubscribe from a list).
//!
//! Storage: the `scope` column is the key with the primary key `(scope, recipient)` of the
//! first version, so that one recipient can be on several lists of one domain without a new
//! primary key (a post office of the previous version goes on reading and writing the table):
//! the scope itself for an entry of the whole scope, `scope <list-id>` for a list's, with the
//! list id also in `list_id` ([`stored_scope`]). Nothing outside this module sees that form.
//!
//! - [`hard_failure`]: the one verdict on whether a recipient's outcome says the address
//!   itself is bad (5.1.1, 5.1.10, "user unknown" without an enhanced code, a domain that does
//!   not exist, null MX). Never a 4xx, never a 5.7.x: a reputation or policy block says
//!   nothing about the address.
//! - [`auto`]: the entries a batch of new events adds, with the writer's [`AutoPolicy`]
//!   (no I/O; the store calls it from one place in `Store::write`, inside the batch's
//!   transaction, so an event is suppressed exactly when it is stored).
//! - [`Store`] methods: add, list, remove, the active set for intake, pruning expired ones.
//!
//! Not here: intake's in-memory set, the CLI and the API (post office).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hedwig_queue::event::{Event, Outcome, RecipientEvent, What};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::apply::Apply;
use crate::error::StoreError;
use crate::model::address_key;
use crate::store::Store;

/// The scope of an entry that holds for every sender domain.
pub const GLOBAL: &str = "*";

/// Most entries one [`Store::list_suppressions`] returns.
pub const MAX_LIST: u32 = 1000;

/// Who put an entry on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The ledger writer, from a hard failure.
    Auto,
    /// An operator (`postoffice suppress add`, the API).
    Operator,
    /// The recipient's own word: a complaint (feedback loop report, reason `complaint`) or a
    /// one-click unsubscribe (reason `unsubscribed`).
    Complaint,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Auto => "auto",
            Source::Operator => "operator",
            Source::Complaint => "complaint",
        }
    }

    pub fn parse(name: &str) -> Option<Source> {
        [Source::Auto, Source::Operator, Source::Complaint]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    /// A sender domain (lowercase), or [`GLOBAL`].
    pub scope: String,
    /// The `List-Id:` (lowercase) the entry holds for, alone; `None`: all of the scope's mail.
    pub list_id: Option<String>,
    /// The address, lowercased.
    pub recipient: String,
    /// Why: `unknown-user`, `no-domain`, `null-mx`, or an operator's words.
    pub reason: String,
    pub source: Source,
    /// The remote reply (or local explanation) that caused it.
    pub reply: Option<String>,
    pub code: Option<u16>,
    /// The enhanced status code (RFC 3463).
    pub dsn: Option<String>,
    /// The message whose outcome caused it.
    pub queue_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds; `None`: permanent.
    pub expires_at: Option<u64>,
}

impl Suppression {
    /// Whether it holds at `now` (ms).
    pub fn active(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// What the writer adds by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPolicy {
    /// Add entries at all.
    pub enabled: bool,
    /// One entry for every sender ([`GLOBAL`]) instead of one per sender domain.
    pub global: bool,
    /// How long an entry lasts; `None`: permanent.
    pub expiry: Option<Duration>,
}

impl Default for AutoPolicy {
    /// On, per sender domain, 30 days.
    fn default() -> AutoPolicy {
        AutoPolicy {
            enabled: true,
            global: false,
            expiry: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// Texts of a 5xx reply without an enhanced code that say the mailbox does not exist.
const UNKNOWN_USER: [&str; 7] = [
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "mailbox does not exist",
    "recipient unknown",
    "unknown recipient",
];

/// Whether an outcome (as an event or a recipient row has it) is a hard, address-level
/// failure, and which: `unknown-user` (5.1.1, or a 5xx without an enhanced code whose text
/// says so), `null-mx` (5.1.10, from the remote server or the worker's null MX lookup),
/// `no-domain` (5.1.2 found by the worker's own lookup: NXDOMAIN; a server's 5.1.2 is not
/// trusted, relays say it of domains they do not serve). Only `bounced` outcomes qualify;
/// never a reply that is not 5xx, never a 5.7.x.
pub fn hard_failure(
    outcome: Outcome,
    code: Option<u16>,
    dsn: Option<&str>,
    reply: &str,
) -> Option<&'static str> {
    if outcome != Outcome::Bounced {
        return None;
    }
    if code.is_some_and(|c| !(500..600).contains(&c)) {
        return None;
    }
    let dsn = dsn.map(str::trim).filter(|d| !d.is_empty());
    match dsn {
        Some(d) if !d.starts_with("5.") || d.starts_with("5.7.") => None,
        Some("5.1.1") => Some("unknown-user"),
        Some("5.1.10") => Some("null-mx"),
        Some("5.1.2") if code.is_none() => Some("no-domain"),
        // A server that gives no enhanced code (the worker records 5.0.0 then).
        None | Some("5.0.0") if code.is_some() => {
            let text = reply.to_ascii_lowercase();
            UNKNOWN_USER
                .iter()
                .any(|t| text.contains(t))
                .then_some("unknown-user")
        }
        _ => None,
    }
}

/// [`hard_failure`] of a recipient event.
pub fn event_hard_failure(r: &RecipientEvent) -> Option<&'static str> {
    hard_failure(r.outcome, r.code, r.dsn.as_deref(), &r.reply)
}

/// Why an outcome puts its recipient on the list, and as what: a complaint (an ARF report to
/// the bounce listener) at once and for good, whatever `suppression.auto` says; a
/// [`hard_failure`] as an automatic entry when `auto` is on.
fn entry_reason(
    policy: &AutoPolicy,
    outcome: Outcome,
    code: Option<u16>,
    dsn: Option<&str>,
    reply: &str,
) -> Option<(&'static str, Source)> {
    // The recipient's own word, at once and for good. An unsubscribe is stored with source
    // `complaint` (reason `unsubscribed`), which every reader of the list knows.
    match outcome {
        Outcome::Complained => return Some(("complaint", Source::Complaint)),
        Outcome::Unsubscribed => return Some(("unsubscribed", Source::Complaint)),
        _ => {}
    }
    if !policy.enabled {
        return None;
    }
    hard_failure(outcome, code, dsn, reply).map(|reason| (reason, Source::Auto))
}

/// A list id as entries keep it (lowercase), or `None` when it cannot be one (RFC 2919
/// dot-atom text, at most 256 octets): an entry for such an id could never match a message,
/// so the caller keeps the whole scope's entry instead.
pub fn list_key(id: &str) -> Option<String> {
    let key = hedwig_core::list_id::key(id);
    hedwig_core::list_id::valid(&key).then_some(key)
}

/// What the `scope` column holds for an entry of `scope` and `list` (see the module docs):
/// `scope`, or `scope <list>`. A domain holds no space or `<`, so the two forms never meet.
pub fn stored_scope(scope: &str, list: Option<&str>) -> String {
    match list {
        Some(list) => format!("{scope} <{list}>"),
        None => scope.to_owned(),
    }
}

/// The scope of a stored `scope` column and `list_id`.
fn scope_of(stored: String, list: Option<&str>) -> String {
    match list {
        Some(list) => stored
            .strip_suffix(&format!(" <{list}>"))
            .map(str::to_owned)
            .unwrap_or(stored),
        None => stored,
    }
}

/// The domain of an address (after its last `@`), lowercased; `None` for the null sender.
pub fn domain_of(address: &str) -> Option<String> {
    let key = address_key(address);
    let (_, domain) = key.rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.to_owned())
}

/// An address as the list keys it (trimmed, lowercased).
pub fn normalize(address: &str) -> String {
    address_key(address)
}

/// The entries a batch adds: one per new `bounced` event that is a [`hard_failure`], and,
/// for messages whose `queued` event came only now (`late`), one per recipient already
/// stored as such. A message's sender domain must be known (its `queued` event seen); bounces
/// and the null sender add none (their recipient is an application's own address). An
/// `unsubscribed` event that names a list id adds an entry for that list alone; the `late`
/// path reads the stored recipient rows, which keep no list id, and adds the whole scope's
/// entry then (more than asked, never less).
pub(crate) fn auto(
    policy: &AutoPolicy,
    apply: &Apply,
    new: &[&Event],
    late: &HashSet<String>,
) -> Vec<Suppression> {
    let mut out: HashMap<(String, Option<String>, String), Suppression> = HashMap::new();
    let mut add = |queue_id: &str,
                   recipient: &str,
                   list_id: Option<String>,
                   named_domain: Option<&str>,
                   (reason, source): (&'static str, Source),
                   at: u64,
                   code: Option<u16>,
                   dsn: Option<&str>,
                   reply: Option<&str>| {
        let Some(message) = apply.messages.get(queue_id) else {
            return;
        };
        if message.kind != "message" {
            return;
        }
        // The message's sender domain; for an unsubscribe of a message the ledger no longer
        // has (pruned: retention is shorter than a link's validity), the token's.
        let Some(sender_domain) = message
            .sender
            .as_deref()
            .and_then(domain_of)
            .or_else(|| named_domain.map(address_key))
            .filter(|d| !d.is_empty())
        else {
            return;
        };
        let scope = if policy.global {
            GLOBAL.to_owned()
        } else {
            sender_domain
        };
        let recipient = address_key(recipient);
        let entry = Suppression {
            scope: scope.clone(),
            list_id: list_id.clone(),
            recipient: recipient.clone(),
            reason: reason.to_owned(),
            source,
            reply: reply.map(str::to_owned).filter(|r| !r.is_empty()),
            code,
            dsn: dsn.map(str::to_owned),
            queue_id: Some(queue_id.to_owned()),
            created_at: at,
            // A complaint is the recipient's own word: it does not expire.
            expires_at: policy
                .expiry
                .filter(|_| source == Source::Auto)
                .map(|d| at.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        };
        // The latest failure of a batch stands.
        let key = (scope, list_id, recipient);
        match out.get(&key) {
            Some(old) if old.created_at >= at => {}
            _ => {
                out.insert(key, entry);
            }
        }
    };
    for event in new {
        if let What::Recipient(r) = &event.what {
            if let Some(reason) =
                entry_reason(policy, r.outcome, r.code, r.dsn.as_deref(), &r.reply)
            {
                // Only an unsubscribe is scoped to a list (the token's `List-Id:`).
                let (list, named_domain) = match r.outcome {
                    Outcome::Unsubscribed => (
                        r.list_id.as_deref().and_then(list_key),
                        r.sender_domain.as_deref(),
                    ),
                    _ => (None, None),
                };
                add(
                    &event.queue_id,
                    &r.recipient,
                    list,
                    named_domain,
                    reason,
                    event.at,
                    r.code,
                    r.dsn.as_deref(),
                    Some(&r.reply),
                );
            }
        }
    }
    for queue_id in late {
        let Some(rows) = apply.recipients.get(queue_id) else {
            continue;
        };
        for row in rows.values() {
            let Some(outcome) = Outcome::parse(&row.status) else {
                continue;
            };
            let reply = row.reply.as_deref().unwrap_or("");
            if let Some(reason) = entry_reason(policy, outcome, row.code, row.dsn.as_deref(), reply)
            {
                add(
                    queue_id,
                    &row.recipient,
                    None,
                    None,
                    reason,
                    row.updated_at,
                    row.code,
                    row.dsn.as_deref(),
                    row.reply.as_deref(),
                );
            }
        }
    }
    let mut entries: Vec<Suppression> = out.into_values().collect();
    entries.sort_by(|a, b| {
        (&a.scope, &a.list_id, &a.recipient).cmp(&(&b.scope, &b.list_id, &b.recipient))
    });
    entries
}

const COLUMNS: &str = "scope, recipient, reason, source, reply, code, dsn, queue_id, \
     created_at, expires_at, updated_at, list_id";

/// Which entries a [`SuppressionFilter`] takes by their list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ListMatch {
    /// Entries of the whole scope and of every list.
    #[default]
    Any,
    /// Only entries of the whole scope (no list).
    Whole,
    /// Only the entries of this list id (lowercase).
    Id(String),
}

/// What [`Store::list_suppressions`] and [`Store::remove_suppressions`] match (all given
/// conditions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuppressionFilter {
    pub recipient: Option<String>,
    pub scope: Option<String>,
    pub source: Option<Source>,
    /// Entries of the whole scope, of one list, or both (the default). With `scope`, a scope
    /// takes its lists' entries too unless this says otherwise.
    pub list: ListMatch,
    /// Most entries listed (default 100, at most [`MAX_LIST`]).
    pub limit: Option<u32>,
}

impl SuppressionFilter {
    /// No condition that narrows a removal: a list id is one, "whole scope only" is not.
    pub fn is_empty(&self) -> bool {
        self.recipient.is_none()
            && self.scope.is_none()
            && self.source.is_none()
            && !matches!(self.list, ListMatch::Id(_))
    }

    /// ` AND ...` conditions from `$first` on, and their values.
    fn conditions(&self, first: usize) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let mut add = |column: &str, value: String| {
            values.push(value);
            sql.push_str(&format!(" AND {column} = ${}", first + values.len() - 1));
        };
        if let Some(r) = &self.recipient {
            add("recipient", address_key(r));
        }
        if let Some(s) = self.source {
            add("source", s.as_str().to_owned());
        }
        let scope = self.scope.as_deref().map(|s| s.trim().to_lowercase());
        match (scope, &self.list) {
            (Some(scope), ListMatch::Any) => {
                // The scope's own entry and its lists' (`scope <list>`, module docs).
                values.push(scope.clone());
                values.push(scope);
                let (a, b) = (first + values.len() - 2, first + values.len() - 1);
                sql.push_str(&format!(
                    " AND (scope = ${a} OR (list_id IS NOT NULL AND scope = ${b} || ' <' || list_id || '>'))"
                ));
            }
            (Some(scope), ListMatch::Whole) => {
                add("scope", scope);
                sql.push_str(" AND list_id IS NULL");
            }
            (Some(scope), ListMatch::Id(list)) => {
                add("scope", stored_scope(&scope, Some(list)));
                add("list_id", list.clone());
            }
            (None, ListMatch::Any) => {}
            (None, ListMatch::Whole) => sql.push_str(" AND list_id IS NULL"),
            (None, ListMatch::Id(list)) => add("list_id", list.clone()),
        }
        (sql, values)
    }
}

/// How an upsert treats an entry that is there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// The writer's: the reply and time are the new failure's; the entry lasts as long as
    /// the longer of the two (a permanent one stays permanent); an operator's or a
    /// complaint's source stays.
    Auto,
    /// An operator's: the new entry replaces the old one.
    Replace,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes `entries` in `tx`.
pub(crate) async fn upsert(
    tx: &mut Transaction<'_, Any>,
    entries: &[Suppression],
    merge: Merge,
    now: u64,
) -> Result<(), StoreError> {
    let on_conflict = match merge {
        Merge::Replace => {
            "reason = excluded.reason, source = excluded.source, reply = excluded.reply, \
             code = excluded.code, dsn = excluded.dsn, queue_id = excluded.queue_id, \
             created_at = excluded.created_at, expires_at = excluded.expires_at, \
             updated_at = excluded.updated_at"
        }
        Merge::Auto => {
            "reason = excluded.reason, reply = excluded.reply, \
             source = CASE WHEN excluded.source = 'complaint' THEN excluded.source \
             ELSE suppressions.source END, code = excluded.code, \
             dsn = excluded.dsn, queue_id = excluded.queue_id, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, \
             expires_at = CASE WHEN suppressions.expires_at IS NULL \
             OR excluded.expires_at IS NULL THEN NULL \
             WHEN excluded.expires_at > suppressions.expires_at THEN excluded.expires_at \
             ELSE suppressions.expires_at END"
        }
    };
    let sql = format!(
        "INSERT INTO suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12) ON CONFLICT (scope, recipient) DO UPDATE SET {on_conflict}"
    );
    for e in entries {
        sqlx::query(&sql)
            .bind(stored_scope(&e.scope, e.list_id.as_deref()))
            .bind(e.recipient.clone())
            .bind(e.reason.clone())
            .bind(e.source.as_str())
            .bind(e.reply.clone())
            .bind(e.code.map(i64::from))
            .bind(e.dsn.clone())
            .bind(e.queue_id.clone())
            .bind(ms(e.created_at))
            .bind(e.expires_at.map(ms))
            .bind(ms(now))
            .bind(e.list_id.clone())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn from_row(row: &AnyRow) -> Result<Suppression, StoreError> {
    let source: String = row.try_get("source")?;
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let list_id: Option<String> = row.try_get("list_id")?;
    Ok(Suppression {
        scope: scope_of(row.try_get("scope")?, list_id.as_deref()),
        list_id,
        recipient: row.try_get("recipient")?,
        reason: row.try_get("reason")?,
        source: Source::parse(&source)
            .ok_or_else(|| StoreError::Corrupt(format!("suppression source {source:?}")))?,
        reply: row.try_get("reply")?,
        code: row
            .try_get::<Option<i64>, _>("code")?
            .and_then(|c| u16::try_from(c).ok()),
        dsn: row.try_get("dsn")?,
        queue_id: row.try_get("queue_id")?,
        created_at: u(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(u),
    })
}

/// An entry as intake needs it ([`Store::active_suppressions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub scope: String,
    pub list_id: Option<String>,
    pub recipient: String,
    pub expires_at: Option<u64>,
}

/// A cheap fingerprint of the list: entries and the last write. Equal fingerprints: nothing
/// was added, changed or removed in between (expiry is checked by the reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub count: u64,
    pub last_write: u64,
}

impl Store {
    /// Adds or replaces an operator's (or a complaint's) entry. The recipient and scope are
    /// normalised here.
    pub async fn add_suppression(&self, entry: &Suppression) -> Result<(), StoreError> {
        let mut entry = entry.clone();
        entry.recipient = address_key(&entry.recipient);
        entry.scope = entry.scope.trim().to_lowercase();
        entry.list_id = entry.list_id.as_deref().map(hedwig_core::list_id::key);
        let mut tx = self.pool.begin().await?;
        self.lock(&mut tx).await?;
        upsert(
            &mut tx,
            std::slice::from_ref(&entry),
            Merge::Replace,
            crate::store::now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries matching `filter` that hold at `now` (ms) (with `expired`: also those that
    /// ran out and are not pruned yet), newest first.
    pub async fn list_suppressions(
        &self,
        filter: &SuppressionFilter,
        now: u64,
        expired: bool,
    ) -> Result<Vec<Suppression>, StoreError> {
        let (conditions, values) = filter.conditions(1);
        let n = values.len();
        let active = if expired {
            String::new()
        } else {
            format!(" AND (expires_at IS NULL OR expires_at > ${})", n + 1)
        };
        let limit_at = if expired { n + 1 } else { n + 2 };
        let sql = format!(
            "SELECT {COLUMNS} FROM suppressions WHERE 1 = 1{conditions}{active} \
             ORDER BY created_at DESC, scope, recipient LIMIT ${limit_at}"
        );
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v);
        }
        if !expired {
            q = q.bind(ms(now));
        }
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_LIST);
        q = q.bind(i64::from(limit));
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Deletes the entries matching `filter` (at least one condition is required, so that
    /// nothing deletes the whole list by mistake); how many.
    pub async fn remove_suppressions(&self, filter: &SuppressionFilter) -> Result<u64, StoreError> {
        if filter.is_empty() {
            return Ok(0);
        }
        let (conditions, values) = filter.conditions(1);
        let sql = format!("DELETE FROM suppressions WHERE 1 = 1{conditions}");
        let mut tx = self.pool.begin().await?;
        self.lock(&mut tx).await?;
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v);
        }
        let n = q.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// The list's [`Fingerprint`].
    pub async fn suppression_fingerprint(&self) -> Result<Fingerprint, StoreError> {
        let row = sqlx::query("SELECT COUNT(*), MAX(updated_at) FROM suppressions")
            .fetch_one(&self.pool)
            .await?;
        Ok(Fingerprint {
            count: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
            last_write: row
                .try_get::<Option<i64>, _>(1)?
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
        })
    }

    /// Entries that hold at `now`, at most `max` (the newest); and whether there were more
    /// (the caller says so).
    pub async fn active_suppressions(
        &self,
        now: u64,
        max: usize,
    ) -> Result<(Vec<Active>, bool), StoreError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1);
        let rows = sqlx::query(
            "SELECT scope, list_id, recipient, expires_at FROM suppressions \
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC LIMIT $2",
        )
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > max;
        let mut out = Vec::with_capacity(rows.len().min(max));
        for row in rows.iter().take(max) {
            let list_id: Option<String> = row.try_get("list_id")?;
            out.push(Active {
                scope: scope_of(row.try_get("scope")?, list_id.as_deref()),
                list_id,
                recipient: row.try_get("recipient")?,
                expires_at: row
                    .try_get::<Option<i64>, _>("expires_at")?
                    .and_then(|v| u64::try_from(v).ok()),
            });
        }
        Ok((out, more))
    }

    /// Deletes entries that ran out before `now` (ms); how many.
    pub async fn prune_suppressions(&self, now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.lock(&mut tx).await?;
        let n = sqlx::query(
            "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= $1",
        )
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(code: Option<u16>, dsn: Option<&str>, reply: &str) -> Option<&'static str> {
        hard_failure(Outcome::Bounced, code, dsn, reply)
    }

    #[test]
    fn address_level_failures_suppress() {
        assert_eq!(
            verdict(Some(550), Some("5.1.1"), "550 5.1.1 no such user"),
            Some("unknown-user")
        );
        assert_eq!(
            verdict(Some(550), Some("5.1.10"), "550 5.1.10 null MX"),
            Some("null-mx")
        );
        // The worker's own DNS verdicts: no server, its enhanced codes (worker/src/error.rs).
        assert_eq!(
            verdict(
                None,
                Some("5.1.2"),
                "domain x.test does not exist (NXDOMAIN)"
            ),
            Some("no-domain")
        );
        assert_eq!(
            verdict(
                None,
                Some("5.1.10"),
                "domain x.test accepts no mail (null MX, RFC 7505)"
            ),
            Some("null-mx")
        );
        // No enhanced code: the text decides (the worker records 5.0.0).
        assert_eq!(
            verdict(Some(550), Some("5.0.0"), "550 <a@x>: User unknown"),
            Some("unknown-user")
        );
        assert_eq!(
            verdict(Some(550), None, "550 No such user here"),
            Some("unknown-user")
        );
    }

    #[test]
    fn policy_temporary_and_other_failures_do_not() {
        assert_eq!(verdict(Some(550), Some("5.7.1"), "550 5.7.1 blocked"), None);
        // A policy block whose text mentions users is still a policy block.
        assert_eq!(
            verdict(
                Some(554),
                Some("5.7.1"),
                "554 5.7.1 user unknown or blocked"
            ),
            None
        );
        assert_eq!(
            verdict(Some(450), Some("4.1.1"), "450 4.1.1 try later"),
            None
        );
        // A 4xx reply is never permanent, whatever enhanced code it carries.
        assert_eq!(verdict(Some(451), Some("5.1.1"), "451 5.1.1 odd"), None);
        assert_eq!(
            verdict(Some(552), Some("5.2.2"), "552 5.2.2 mailbox full"),
            None
        );
        assert_eq!(verdict(Some(550), Some("5.0.0"), "550 rejected"), None);
        // A server's 5.1.2 is a relay refusing a domain, not proof it does not exist.
        assert_eq!(
            verdict(Some(550), Some("5.1.2"), "550 5.1.2 relay denied"),
            None
        );
        // Only bounces: a deferral or an expiry carrying 5.1.1 text does not count.
        for outcome in [
            Outcome::Deferred,
            Outcome::Expired,
            Outcome::Failed,
            Outcome::Sent,
        ] {
            assert_eq!(
                hard_failure(outcome, Some(550), Some("5.1.1"), "550 5.1.1"),
                None,
                "{outcome}"
            );
        }
    }

    #[test]
    fn domains_and_sources() {
        assert_eq!(domain_of("App@Example.COM"), Some("example.com".into()));
        assert_eq!(domain_of(""), None);
        assert_eq!(domain_of("x@"), None);
        for s in [Source::Auto, Source::Operator, Source::Complaint] {
            assert_eq!(Source::parse(s.as_str()), Some(s));
        }
        assert_eq!(Source::parse("nope"), None);
    }
}
