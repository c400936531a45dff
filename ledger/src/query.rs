//! Reading the store: search with cursor pagination, a message's timeline, hourly counts,
//! stuck messages; and pruning old records in bounded batches.
//!
//! Searches are built from constant SQL fragments, one per filter that is set, with every
//! value bound as a parameter. A search by recipient walks the `recipients` index in
//! `(queued_at, queue_id)` order; the others walk `messages` indexes in the same order.
//!
//! Not here: writing events (`store`).

use hedwig_queue::event::Event;
use sqlx::Row;

use crate::error::StoreError;
use crate::model::{
    address_key, message_id_key, Cursor, Filter, HourlyCount, Message, Page, Timeline,
};
use crate::store::{message_from_row, recipient_from_row, Store, EVENT_COLUMNS, RECIPIENT_COLUMNS};

/// `messages` columns qualified with `m.`.
const M_COLUMNS: &str = "m.queue_id, m.host, m.sender, m.message_id, m.subject, m.size, \
     m.edge_id, m.edge_client, m.post_client, m.kind, m.bounce_of, m.queued_at, m.expires_at, \
     m.recipients, m.status, m.last_event_at, m.final_at, m.app, m.lane, \
     m.fixups";

/// A bound value of a search.
enum Value {
    Text(String),
    Int(i64),
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Messages matching `filter`, newest first (by queued time, then queue id), at most
    /// [`Filter::page_size`]; `next` continues after the last one.
    pub async fn search(&self, filter: &Filter) -> Result<Page, StoreError> {
        let mut sql = String::new();
        let mut values: Vec<Value> = Vec::new();
        let bind = |values: &mut Vec<Value>, v: Value| {
            values.push(v);
            format!("${}", values.len())
        };
        // Ordering and time conditions go on the table whose index is walked.
        let t = if let Some(recipient) = &filter.recipient {
            let p = bind(&mut values, Value::Text(address_key(recipient)));
            sql.push_str(&format!(
                "SELECT {M_COLUMNS} FROM recipients r JOIN messages m ON m.queue_id = \
                 r.queue_id WHERE r.recipient = {p}"
            ));
            "r"
        } else {
            sql.push_str(&format!("SELECT {M_COLUMNS} FROM messages m WHERE 1 = 1"));
            "m"
        };
        if let Some(host) = &filter.host {
            let p = bind(&mut values, Value::Text(host.trim().to_owned()));
            sql.push_str(&format!(" AND m.host = {p}"));
        }
        if let Some(sender) = &filter.sender {
            let p = bind(&mut values, Value::Text(address_key(sender)));
            sql.push_str(&format!(" AND m.sender = {p}"));
        }
        if let Some(id) = &filter.message_id {
            let p = bind(&mut values, Value::Text(message_id_key(id)));
            sql.push_str(&format!(" AND m.message_id = {p}"));
        }
        if let Some(id) = &filter.queue_id {
            let p = bind(&mut values, Value::Text(id.trim().to_owned()));
            sql.push_str(&format!(" AND m.queue_id = {p}"));
        }
        if let Some(id) = &filter.edge_id {
            let p = bind(&mut values, Value::Text(id.trim().to_owned()));
            sql.push_str(&format!(" AND m.edge_id = {p}"));
        }
        if let Some(status) = filter.status {
            let p = bind(&mut values, Value::Text(status.as_str().to_owned()));
            sql.push_str(&format!(" AND m.status = {p}"));
        }
        if let Some(from) = filter.from {
            let p = bind(&mut values, Value::Int(ms(from)));
            sql.push_str(&format!(" AND {t}.queued_at >= {p}"));
        }
        if let Some(to) = filter.to {
            let p = bind(&mut values, Value::Int(ms(to)));
            sql.push_str(&format!(" AND {t}.queued_at < {p}"));
        }
        if let Some(cursor) = &filter.cursor {
            let at = bind(&mut values, Value::Int(ms(cursor.queued_at)));
            let id = bind(&mut values, Value::Text(cursor.queue_id.clone()));
            sql.push_str(&format!(
                " AND ({t}.queued_at < {at} OR ({t}.queued_at = {at} AND {t}.queue_id < {id}))"
            ));
        }
        let limit = filter.page_size();
        let p = bind(&mut values, Value::Int(i64::from(limit) + 1));
        sql.push_str(&format!(
            " ORDER BY {t}.queued_at DESC, {t}.queue_id DESC LIMIT {p}"
        ));

        let mut q = sqlx::query(&sql);
        for v in values {
            q = match v {
                Value::Text(s) => q.bind(s),
                Value::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if messages.len() > limit as usize {
            messages.truncate(limit as usize);
            messages.last().map(|m| Cursor {
                queued_at: m.queued_at,
                queue_id: m.queue_id.clone(),
            })
        } else {
            None
        };
        Ok(Page { messages, next })
    }

    /// The message `queue_id` with its recipients and events (oldest first); `None` when the
    /// ledger has nothing of it.
    pub async fn timeline(&self, queue_id: &str) -> Result<Option<Timeline>, StoreError> {
        // One snapshot for the three reads: the writer commits a batch's recipients and the
        // message's status together, and separate reads could pair a message row from before
        // a batch with its recipients from after it (a `sent` message with a bounced
        // recipient). SQLite (WAL) keeps a deferred transaction's first snapshot; PostgreSQL
        // needs REPEATABLE READ for that (READ COMMITTED snapshots per statement).
        let mut tx = self.pool.begin().await?;
        if self.backend == crate::store::Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let sql = format!("SELECT {M_COLUMNS} FROM messages m WHERE m.queue_id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(queue_id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let message = message_from_row(&row)?;
        let sql = format!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = $1 ORDER BY recipient"
        );
        let recipients = sqlx::query(&sql)
            .bind(queue_id.to_owned())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(recipient_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let events = events_from_rows(
            queue_id,
            &sqlx::query(&events_sql())
                .bind(queue_id.to_owned())
                .fetch_all(&mut *tx)
                .await?,
        )?;
        // Read only: nothing to keep.
        tx.rollback().await?;
        Ok(Some(Timeline {
            message,
            recipients,
            events,
        }))
    }

    /// The events of `queue_id`, oldest first.
    pub async fn events(&self, queue_id: &str) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(&events_sql())
            .bind(queue_id.to_owned())
            .fetch_all(&self.pool)
            .await?;
        events_from_rows(queue_id, &rows)
    }

    /// Number of stored events (all messages).
    pub async fn event_count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    /// Per-outcome counts of `host` for the hours starting in `[from, to)` (ms), oldest
    /// first. Outcome `queued` counts messages queued.
    pub async fn hourly(
        &self,
        host: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<HourlyCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT hour, outcome, count FROM hourly WHERE host = $1 AND hour >= $2 AND \
             hour < $3 ORDER BY hour, outcome",
        )
        .bind(host.to_owned())
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(hourly_count).collect()
    }

    /// Per host and outcome, the counts of the hours starting in `[from, to)` (ms) added up:
    /// `(host, outcome, count)`, by host then outcome. Outcome `queued` counts messages queued.
    pub async fn hourly_totals(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, outcome, CAST(SUM(count) AS BIGINT) FROM hourly WHERE hour >= $1 AND hour < $2 \
             GROUP BY host, outcome ORDER BY host, outcome",
        )
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Per hour and outcome, the counts of every host added up, for the hours starting in
    /// `[from, to)` (ms), oldest first. Outcome `queued` counts messages queued.
    pub async fn hourly_all(&self, from: u64, to: u64) -> Result<Vec<HourlyCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT hour, outcome, CAST(SUM(count) AS BIGINT) FROM hourly WHERE hour >= $1 AND hour < $2 \
             GROUP BY hour, outcome ORDER BY hour, outcome",
        )
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(hourly_count).collect()
    }

    /// Messages queued in `[from, to)` (ms) per minute and present status:
    /// `(start of the minute, status, count)`, oldest first. Reads the queue-time index only
    /// over the window, so it stays cheap on a large ledger for windows of an hour or so.
    pub async fn per_minute(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT (queued_at / 60000) * 60000 AS minute, status, COUNT(*) FROM messages \
             WHERE queued_at >= $1 AND queued_at < $2 GROUP BY minute, status \
             ORDER BY minute, status",
        )
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
                    row.try_get(1)?,
                    u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The recipients of the messages queued in `[from, to)` (ms) per recipient domain
    /// (after the first `@`; addresses are stored lowercased) and present status:
    /// `(domain, status, count)`, by domain then status; and whether `max_rows` recipients
    /// were counted (then the window may hold more, older ones not counted). Reads the
    /// queue-time index over the window and each message's recipients by primary key; the
    /// counting is done by the store.
    pub async fn domain_statuses(
        &self,
        from: u64,
        to: u64,
        max_rows: u32,
    ) -> Result<(Vec<(String, String, u64)>, bool), StoreError> {
        let domain = match self.backend {
            crate::Backend::Sqlite => "substr(recipient, instr(recipient, '@') + 1)",
            crate::Backend::Postgres => "substr(recipient, strpos(recipient, '@') + 1)",
        };
        let sql = format!(
            "SELECT {domain} AS domain, status, COUNT(*) FROM (SELECT r.recipient, r.status \
             FROM messages m JOIN recipients r ON r.queue_id = m.queue_id \
             WHERE m.queued_at >= $1 AND m.queued_at < $2 ORDER BY m.queued_at DESC LIMIT $3) \
             AS newest GROUP BY domain, status ORDER BY domain, status"
        );
        let rows = sqlx::query(&sql)
            .bind(ms(from))
            .bind(ms(to))
            .bind(i64::from(max_rows))
            .fetch_all(&self.pool)
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            counts.push((
                row.try_get::<String, _>(0)?,
                row.try_get::<String, _>(1)?,
                u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
            ));
        }
        let read: u64 = counts.iter().map(|c| c.2).sum();
        Ok((counts, read >= u64::from(max_rows)))
    }

    /// Every host with the start of the last hour it queued or had an outcome in (from the
    /// hourly counts, kept as long as the ledger's retention), by host.
    pub async fn hosts_last_seen(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT host, MAX(hour) FROM hourly GROUP BY host ORDER BY host")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Messages that some recipient has no final outcome for although they were queued
    /// more than `stuck_after` before `now` (ms), oldest first, at most `limit`.
    pub async fn stuck(
        &self,
        now: u64,
        stuck_after: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let sql = format!(
            "SELECT {M_COLUMNS} FROM messages m WHERE m.final_at IS NULL AND m.queued_at < $1 \
             ORDER BY m.queued_at, m.queue_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(ms(stuck_cutoff(now, stuck_after)))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// How many messages [`Store::stuck`] would list without a limit.
    pub async fn stuck_count(
        &self,
        now: u64,
        stuck_after: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM messages WHERE final_at IS NULL AND queued_at < $1")
                .bind(ms(stuck_cutoff(now, stuck_after)))
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    /// Deletes the messages queued before `older_than` (ms) with their recipients and
    /// events, `batch` messages per transaction (so that writers wait for one short
    /// transaction at a time), and the hourly counts of hours before it. Returns the number
    /// of messages deleted.
    pub async fn prune(&self, older_than: u64, batch: u32) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let cutoff = ms(older_than);
        let old = "SELECT queue_id FROM messages WHERE queued_at < $1 ORDER BY queued_at, \
                   queue_id LIMIT $2";
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            self.lock(&mut tx).await?;
            // Events first: the message rows name what the batch is.
            for table in ["events", "recipients"] {
                let sql = format!("DELETE FROM {table} WHERE queue_id IN ({old})");
                sqlx::query(&sql)
                    .bind(cutoff)
                    .bind(i64::from(batch))
                    .execute(&mut *tx)
                    .await?;
            }
            let sql = format!("DELETE FROM messages WHERE queue_id IN ({old})");
            let deleted = sqlx::query(&sql)
                .bind(cutoff)
                .bind(i64::from(batch))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            total += deleted;
            if deleted < u64::from(batch) {
                break;
            }
        }
        sqlx::query("DELETE FROM hourly WHERE hour < $1")
            .bind(ms(older_than - older_than % crate::apply::HOUR_MS))
            .execute(&self.pool)
            .await?;
        Ok(total)
    }
}

/// Queued before this (ms) and not final: stuck.
fn stuck_cutoff(now: u64, stuck_after: std::time::Duration) -> u64 {
    now.saturating_sub(u64::try_from(stuck_after.as_millis()).unwrap_or(u64::MAX))
}

/// An `(hour, outcome, count)` row.
fn hourly_count(row: &sqlx::any::AnyRow) -> Result<HourlyCount, StoreError> {
    Ok(HourlyCount {
        hour: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
        outcome: row.try_get(1)?,
        count: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
    })
}

/// A message's events, oldest first.
fn events_sql() -> String {
    format!("SELECT {EVENT_COLUMNS} FROM events WHERE queue_id = $1 ORDER BY at, id")
}

fn events_from_rows(queue_id: &str, rows: &[sqlx::any::AnyRow]) -> Result<Vec<Event>, StoreError> {
    rows.iter()
        .map(|row| {
            let detail: String = row.try_get("detail")?;
            serde_json::from_str::<Event>(&detail)
                .map_err(|e| StoreError::Corrupt(format!("event of {queue_id}: {e}: {detail}")))
        })
        .collect()
}
