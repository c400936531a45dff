//! The webhook outbox (issue 14, docs/webhooks.md): which events go to which endpoint, the
//! payload each endpoint gets, and the `webhook_outbox` rows a dispatcher claims, sends and
//! marks.
//!
//! The writer calls [`enqueue`] inside the transaction that stores a batch's new events, so
//! an event is in the outbox exactly when it is in the ledger: a writer killed before its
//! commit leaves both to the events' redelivery, after it leaves both written (at least once
//! across a SIGKILL; the payload and its event id are fixed at this moment, so a redelivery
//! carries the same id).
//!
//! Claiming: one `UPDATE ... RETURNING` sets `lease_owner` and `lease_until` on due rows
//! whose lease is free, with the lease condition in the statement's own `WHERE`, so that on
//! PostgreSQL a second dispatcher's concurrent UPDATE re-checks each row after the first one
//! commits and skips it; its candidates are picked `FOR UPDATE SKIP LOCKED`, so two claims
//! at once take different rows (SQLite has one writer at a time anyway).
//!
//! Not here: HTTP, signing, backoff (the post office's dispatcher).

use std::collections::HashSet;

use hedwig_queue::event::{Event, What};
use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use crate::apply::Apply;
use crate::error::StoreError;
use crate::model::address_key;
use crate::store::{Backend, Store};

/// Format version of [`Payload`].
pub const PAYLOAD_VERSION: u32 = 1;

/// The event types an endpoint can ask for, as the payload's `type` names them.
pub const EVENT_TYPES: [&str; 10] = [
    "queued",
    "delivered",
    "deferred",
    "bounced",
    "expired",
    "suppressed",
    "held",
    "released",
    "complained",
    "unsubscribed",
];

/// An endpoint as the writer sees it: its name and what it wants. The URL and the secret
/// are the dispatcher's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The endpoint's name (the outbox key).
    pub name: String,
    /// Event types (from [`EVENT_TYPES`]).
    pub events: HashSet<String>,
    /// Sending hosts (lowercase); empty: every host.
    pub hosts: Vec<String>,
    /// Envelope sender domains (lowercase); empty: every domain.
    pub sender_domains: Vec<String>,
}

impl Route {
    /// Whether this endpoint wants an event of `event_type` of a message from `host` with
    /// envelope sender `sender` (`None`: not known yet, the message's `queued` event has not
    /// been written; only an endpoint without filters takes it).
    pub fn wants(&self, event_type: &str, host: Option<&str>, sender: Option<&str>) -> bool {
        if !self.events.contains(event_type) {
            return false;
        }
        if !self.hosts.is_empty() && !host.is_some_and(|h| self.hosts.iter().any(|x| x == h)) {
            return false;
        }
        if !self.sender_domains.is_empty() {
            let domain = sender
                .and_then(|s| s.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            if !domain.is_some_and(|d| self.sender_domains.contains(&d)) {
                return false;
            }
        }
        true
    }
}

/// The webhook type of a ledger event: `queued`, or a recipient's outcome named for an app
/// (`sent` is `delivered`). Operator actions without an app meaning (`requeued`, `purged`,
/// `failed`) and `bounce_queued` have none. Outcomes are matched by name, so that one added
/// to the event format later (`suppressed`) maps without a change here.
pub fn event_type(what: &What) -> Option<&'static str> {
    match what {
        What::Queued(_) => Some("queued"),
        What::Recipient(r) => match r.outcome.as_str() {
            "sent" => Some("delivered"),
            "deferred" => Some("deferred"),
            "bounced" => Some("bounced"),
            "expired" => Some("expired"),
            "suppressed" => Some("suppressed"),
            "held" => Some("held"),
            "released" => Some("released"),
            "complained" => Some("complained"),
            "unsubscribed" => Some("unsubscribed"),
            _ => None,
        },
        What::BounceQueued { .. } => None,
    }
}

/// The JSON an endpoint receives (docs/webhooks.md). Fields are only ever added; `v` changes
/// when one changes meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload {
    pub v: u32,
    /// The ledger event's id: the same on every redelivery.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened: Unix milliseconds, and RFC 3339 (UTC).
    pub at: u64,
    pub time: String,
    pub queue_id: String,
    /// The `Message-ID:` without angle brackets.
    pub message_id: Option<String>,
    /// The sending host's fqdn.
    pub host: Option<String>,
    /// The envelope sender (lowercased).
    pub sender: Option<String>,
    /// The app inside the sending host (a container's name or a mailman login), when mailman
    /// knew it. Added with issue 17; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The lane the message was queued in. Added with issue 17; absent for messages from
    /// post offices before lanes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// The recipient (outcome events); `null` for `queued`.
    pub recipient: Option<String>,
    /// Every recipient (`queued` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// `queued` only: the sending host was held at intake (the message waits for
    /// `postoffice release`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    pub mx: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<bool>,
    /// The SMTP reply code, its enhanced status code (RFC 3463) and text.
    pub code: Option<u16>,
    pub enhanced_code: Option<String>,
    pub reply: Option<String>,
    /// Which delivery attempt (1 = first), for outcomes of attempts.
    pub attempt: Option<u32>,
    /// `unsubscribed` only: the `List-Id:` the recipient left (the suppression holds for that
    /// list alone). Added with issue 19; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_id: Option<String>,
}

/// The payload of `event` for a message known as `apply` has it.
fn payload(event: &Event, event_type: &str, apply: &Apply) -> Payload {
    let message = apply.messages.get(&event.queue_id);
    let mut p = Payload {
        v: PAYLOAD_VERSION,
        id: event.id.clone(),
        event_type: event_type.to_owned(),
        at: event.at,
        time: rfc3339(event.at),
        queue_id: event.queue_id.clone(),
        message_id: message.and_then(|m| m.message_id.clone()),
        host: message.and_then(|m| m.host.clone()),
        sender: message.and_then(|m| m.sender.clone()),
        app: message.and_then(|m| m.app.clone()),
        lane: message.and_then(|m| m.lane.clone()),
        recipient: None,
        recipients: None,
        held: None,
        mx: None,
        ip: None,
        tls: None,
        code: None,
        enhanced_code: None,
        reply: None,
        attempt: None,
        list_id: None,
    };
    match &event.what {
        What::Queued(q) => {
            p.recipients = Some(q.recipients.iter().map(|r| address_key(r)).collect());
            p.held = Some(q.held);
        }
        What::Recipient(r) => {
            p.recipient = Some(address_key(&r.recipient));
            p.mx = r.mx.clone();
            p.ip = r.ip.clone();
            p.tls = r.tls;
            p.code = r.code;
            p.enhanced_code = r.dsn.clone();
            p.reply = Some(r.reply.clone()).filter(|s| !s.is_empty());
            p.attempt = r.attempt;
            p.list_id = r.list_id.clone();
        }
        What::BounceQueued { .. } => {}
    }
    p
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Puts the outbox rows for `new` (events new to the store) in the writer's transaction.
/// Events of bounces (DSNs the workers made) go nowhere: the app hears `bounced` for its own
/// recipient instead.
pub(crate) async fn enqueue(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    routes: &[Route],
    new: &[&Event],
    apply: &Apply,
) -> Result<usize, StoreError> {
    if routes.is_empty() {
        return Ok(0);
    }
    let mut rows: Vec<(String, &Event, &'static str, String)> = Vec::new();
    for event in new {
        let Some(event_type) = event_type(&event.what) else {
            continue;
        };
        let message = apply.messages.get(&event.queue_id);
        let is_bounce = match &event.what {
            What::Queued(q) => q.message_kind == "bounce",
            _ => message.is_some_and(|m| m.kind == "bounce"),
        };
        if is_bounce {
            continue;
        }
        let host = message.and_then(|m| m.host.as_deref());
        let sender = message.and_then(|m| m.sender.as_deref());
        let wanting: Vec<&Route> = routes
            .iter()
            .filter(|r| r.wants(event_type, host, sender))
            .collect();
        if wanting.is_empty() {
            continue;
        }
        let body = serde_json::to_string(&payload(event, event_type, apply))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for route in wanting {
            rows.push((route.name.clone(), event, event_type, body.clone()));
        }
    }
    let now = i(hedwig_queue::event::now_millis());
    for chunk in rows.chunks(200) {
        let sql = format!(
            "INSERT INTO webhook_outbox (endpoint, event_id, event_type, queue_id, recipient, \
             payload, status, first_at, next_at, attempts) VALUES {} \
             ON CONFLICT (endpoint, event_id) DO NOTHING",
            crate::store::placeholders(backend, chunk.len(), 10)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for (endpoint, event, event_type, body) in chunk {
            let recipient = match &event.what {
                What::Recipient(r) => Some(address_key(&r.recipient)),
                _ => None,
            };
            q = q
                .bind(endpoint.clone())
                .bind(event.id.clone())
                .bind(*event_type)
                .bind(event.queue_id.clone())
                .bind(recipient)
                .bind(body.clone())
                .bind("pending")
                .bind(now)
                .bind(now)
                .bind(0i64);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(rows.len())
}

/// The `n`th (1-based) statement parameter: `$n` on PostgreSQL, `?` on SQLite (where every
/// parameter of the statement must then be `?`, see `store::placeholders`).
fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// A row claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub endpoint: String,
    pub event_id: String,
    pub event_type: String,
    /// The JSON body, as it was made when the event was written.
    pub payload: String,
    /// Sends tried before this one.
    pub attempts: u32,
    /// Where `max_age` counts from (Unix ms).
    pub first_at: u64,
}

/// How a send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// A 2xx answer: done.
    Done { code: u16 },
    /// Anything else: try again at `next_at` (Unix ms), or give up (`failed`) when `give_up`.
    Retry {
        code: Option<u16>,
        error: String,
        next_at: u64,
        give_up: bool,
    },
}

/// One outbox row, for `postoffice webhooks` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub endpoint: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub queue_id: String,
    pub recipient: Option<String>,
    /// `pending`, `done` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub first_at: u64,
    pub next_at: u64,
    /// The last answer's HTTP status, or the last error (connection refused, timeout...).
    pub last_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_at: Option<u64>,
    pub done_at: Option<u64>,
}

/// Rows per endpoint and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointCounts {
    pub endpoint: String,
    pub pending: u64,
    pub done: u64,
    pub failed: u64,
}

/// Outbox statuses.
pub const STATUSES: [&str; 3] = ["pending", "done", "failed"];

const DELIVERY_COLUMNS: &str = "endpoint, event_id, event_type, queue_id, recipient, status, \
     attempts, first_at, next_at, last_code, last_error, last_at, done_at";

fn delivery_from_row(row: &sqlx::any::AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        endpoint: row.try_get("endpoint")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        queue_id: row.try_get("queue_id")?,
        recipient: row.try_get("recipient")?,
        status: row.try_get("status")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        first_at: u(row.try_get("first_at")?),
        next_at: u(row.try_get("next_at")?),
        last_code: row
            .try_get::<Option<i64>, _>("last_code")?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: row.try_get("last_error")?,
        last_at: row.try_get::<Option<i64>, _>("last_at")?.map(u),
        done_at: row.try_get::<Option<i64>, _>("done_at")?.map(u),
    })
}

impl Store {
    /// This store with webhook `routes`: from now on [`Store::write`] puts an outbox row per
    /// new event and endpoint that wants it, in the same transaction.
    pub fn with_webhooks(mut self, routes: Vec<Route>) -> Store {
        self.webhooks = std::sync::Arc::new(routes);
        self
    }

    /// Wakes when a write of this process (this store or a clone of it) has put rows in the
    /// webhook outbox; a dispatcher waits on it between polls. Writes of other processes
    /// (another post office on the same PostgreSQL) do not wake it: it still polls.
    pub fn outbox_filled(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_filled.clone()
    }

    /// Claims up to `limit` due rows of `endpoint` for `owner` until `lease_until` (Unix ms):
    /// no other claim takes them before then, unless they are marked first.
    pub async fn claim_webhooks(
        &self,
        endpoint: &str,
        owner: &str,
        now: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        // The lease condition is in the UPDATE's own WHERE: PostgreSQL re-checks it on a row
        // another transaction changed meanwhile (READ COMMITTED), so two claims never
        // overlap.
        // On PostgreSQL the candidates skip rows another claim has locked, so that two
        // claims at once take different rows rather than one taking none.
        let skip = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_outbox SET lease_owner = $1, lease_until = $2 \
             WHERE endpoint = $3 AND status = 'pending' AND next_at <= $4 \
             AND (lease_until IS NULL OR lease_until < $4) \
             AND event_id IN (SELECT event_id FROM webhook_outbox WHERE endpoint = $3 \
               AND status = 'pending' AND next_at <= $4 \
               AND (lease_until IS NULL OR lease_until < $4) ORDER BY next_at LIMIT $5{skip}) \
             RETURNING endpoint, event_id, event_type, payload, attempts, first_at"
        );
        let rows = sqlx::query(&sql)
            .bind(owner.to_owned())
            .bind(i(lease_until))
            .bind(endpoint.to_owned())
            .bind(i(now))
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Claimed {
                    endpoint: row.try_get("endpoint")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    payload: row.try_get("payload")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    first_at: u(row.try_get("first_at")?),
                })
            })
            .collect()
    }

    /// Records how a send of a row claimed by `owner` went (at `now`, Unix ms). False when the
    /// row is no longer this owner's (its lease ran out and another claim took it).
    pub async fn finish_webhook(
        &self,
        endpoint: &str,
        event_id: &str,
        owner: &str,
        now: u64,
        result: &SendResult,
    ) -> Result<bool, StoreError> {
        let n = self
            .finish_webhooks(
                endpoint,
                owner,
                &[(event_id.to_owned(), now, result.clone())],
            )
            .await?;
        Ok(n == 1)
    }

    /// [`Store::finish_webhook`] for several rows of one endpoint, in one transaction (one
    /// disk flush for a batch of sends); returns how many were still this owner's.
    pub async fn finish_webhooks(
        &self,
        endpoint: &str,
        owner: &str,
        results: &[(String, u64, SendResult)],
    ) -> Result<u64, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut total = 0;
        // The answered rows (nearly all of them) in one statement per chunk: the same
        // change, each with its own code and time.
        let done: Vec<(&String, u64, u16)> = results
            .iter()
            .filter_map(|(id, now, result)| match result {
                SendResult::Done { code } => Some((id, *now, *code)),
                SendResult::Retry { .. } => None,
            })
            .collect();
        for chunk in done.chunks(200) {
            // VALUES columns are column1, column2, ... on both SQLite and PostgreSQL.
            let sql = format!(
                "UPDATE webhook_outbox SET status = 'done', attempts = attempts + 1, \
                 last_code = v.code, last_error = NULL, last_at = v.at, next_at = v.at, \
                 done_at = v.at, lease_owner = NULL, lease_until = NULL \
                 FROM (SELECT column1 AS event_id, column2 AS code, column3 AS at \
                       FROM (VALUES {}) AS answered) AS v \
                 WHERE webhook_outbox.endpoint = {} AND webhook_outbox.event_id = v.event_id \
                 AND webhook_outbox.lease_owner = {}",
                crate::store::placeholders(self.backend, chunk.len(), 3),
                param(self.backend, chunk.len() * 3 + 1),
                param(self.backend, chunk.len() * 3 + 2),
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for (event_id, now, code) in chunk {
                q = q
                    .bind((*event_id).clone())
                    .bind(i64::from(*code))
                    .bind(i(*now));
            }
            total += q
                .bind(endpoint.to_owned())
                .bind(owner.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        for (event_id, now, result) in results {
            if matches!(result, SendResult::Done { .. }) {
                continue;
            }
            let now = *now;
            let (status, code, error, next_at, done_at) = match result {
                SendResult::Done { code } => ("done", Some(*code), None, now, Some(now)),
                SendResult::Retry {
                    code,
                    error,
                    next_at,
                    give_up,
                } => (
                    if *give_up { "failed" } else { "pending" },
                    *code,
                    Some(error.chars().take(500).collect::<String>()),
                    *next_at,
                    None,
                ),
            };
            total += sqlx::query(
                "UPDATE webhook_outbox SET status = $1, attempts = attempts + 1, \
                 last_code = $2, last_error = $3, last_at = $4, next_at = $5, done_at = $6, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE endpoint = $7 AND event_id = $8 AND lease_owner = $9",
            )
            .bind(status)
            .bind(code.map(i64::from))
            .bind(error)
            .bind(i(now))
            .bind(i(next_at))
            .bind(done_at.map(i))
            .bind(endpoint.to_owned())
            .bind(event_id.clone())
            .bind(owner.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(total)
    }

    /// Frees the leases `owner` holds (a dispatcher starting again under the same name: the
    /// process that held them is gone, so their rows are due now rather than at lease end).
    pub async fn release_webhook_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1",
        )
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Rows per endpoint and status.
    pub async fn webhook_counts(&self) -> Result<Vec<EndpointCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT endpoint, status, COUNT(*) FROM webhook_outbox GROUP BY endpoint, status \
             ORDER BY endpoint",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<EndpointCounts> = Vec::new();
        for row in rows {
            let endpoint: String = row.try_get(0)?;
            let status: String = row.try_get(1)?;
            let n = u(row.try_get::<i64, _>(2)?);
            if out.last().is_none_or(|c| c.endpoint != endpoint) {
                out.push(EndpointCounts {
                    endpoint: endpoint.clone(),
                    pending: 0,
                    done: 0,
                    failed: 0,
                });
            }
            if let Some(c) = out.last_mut() {
                match status.as_str() {
                    "pending" => c.pending += n,
                    "done" => c.done += n,
                    "failed" => c.failed += n,
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The newest rows (by `first_at`), of one endpoint and status when given.
    pub async fn webhook_deliveries(
        &self,
        endpoint: Option<&str>,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_outbox \
             WHERE ($1 IS NULL OR endpoint = $1) AND ($2 IS NULL OR status = $2) \
             ORDER BY first_at DESC, event_id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(endpoint.map(str::to_owned))
            .bind(status.map(str::to_owned))
            .bind(i64::from(limit.clamp(1, crate::model::MAX_LIMIT)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Every row of one event (one per endpoint), for tests and `trace`.
    pub async fn webhook_deliveries_of(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_outbox WHERE event_id = $1 ORDER BY endpoint"
        );
        let rows = sqlx::query(&sql)
            .bind(event_id.to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Makes rows of `status` (`failed` or `pending`) of one endpoint (or all) due now, with
    /// a fresh `max_age` (`first_at = now`); returns how many.
    pub async fn retry_webhooks(
        &self,
        endpoint: Option<&str>,
        status: &str,
        now: u64,
    ) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_outbox SET status = 'pending', next_at = $1, first_at = $1, \
             lease_owner = NULL, lease_until = NULL \
             WHERE status = $2 AND ($3 IS NULL OR endpoint = $3)",
        )
        .bind(i(now))
        .bind(status.to_owned())
        .bind(endpoint.map(str::to_owned))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Deletes rows done or failed before `older_than` (Unix ms); returns how many.
    pub async fn prune_webhooks(&self, older_than: u64) -> Result<u64, StoreError> {
        let n =
            sqlx::query("DELETE FROM webhook_outbox WHERE status <> 'pending' AND last_at < $1")
                .bind(i(older_than))
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedwig_queue::event::{Outcome, RecipientEvent};

    fn route(events: &[&str], hosts: &[&str], domains: &[&str]) -> Route {
        Route {
            name: "app".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            hosts: hosts.iter().map(|e| e.to_string()).collect(),
            sender_domains: domains.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn filters() {
        let all = route(&["delivered"], &[], &[]);
        assert!(all.wants("delivered", None, None));
        assert!(!all.wants("bounced", Some("h"), Some("a@b")));
        let host = route(&["delivered"], &["web1.test"], &[]);
        assert!(host.wants("delivered", Some("web1.test"), None));
        assert!(!host.wants("delivered", Some("web2.test"), None));
        assert!(!host.wants("delivered", None, None), "unknown host: no");
        let dom = route(&["delivered"], &[], &["example.com"]);
        assert!(dom.wants("delivered", None, Some("app@Example.COM")));
        assert!(!dom.wants("delivered", None, Some("app@sub.example.com")));
        assert!(!dom.wants("delivered", None, Some("")));
    }

    #[test]
    fn types() {
        let r = |outcome| {
            What::Recipient(RecipientEvent {
                recipient: "a@b".into(),
                outcome,
                mx: None,
                ip: None,
                tls: None,
                code: None,
                dsn: None,
                reply: String::new(),
                attempt: None,
                by: None,
                list_id: None,
                source_ip: None,
                pool: None,
                sender_domain: None,
            })
        };
        assert_eq!(event_type(&r(Outcome::Sent)), Some("delivered"));
        assert_eq!(event_type(&r(Outcome::Deferred)), Some("deferred"));
        assert_eq!(event_type(&r(Outcome::Held)), Some("held"));
        assert_eq!(event_type(&r(Outcome::Purged)), None);
        assert_eq!(event_type(&r(Outcome::Requeued)), None);
        for t in EVENT_TYPES {
            assert!(
                t == "queued"
                    || t == "suppressed"
                    || Outcome::ALL.iter().any(|o| event_type(&r(*o)) == Some(t)),
                "{t}"
            );
        }
        assert_eq!(rfc3339(1_796_169_600_123), "2026-12-02T00:00:00.123Z");
    }

    #[test]
    fn an_unsubscribe_names_its_list_and_other_payloads_do_not_have_the_field() {
        let event = |list_id: Option<&str>| Event {
            id: "e1".into(),
            at: 1,
            queue_id: "Q".into(),
            what: What::Recipient(RecipientEvent {
                recipient: "A@b.test".into(),
                outcome: Outcome::Unsubscribed,
                mx: None,
                ip: None,
                tls: None,
                code: None,
                dsn: None,
                reply: "one-click unsubscribe".into(),
                attempt: None,
                by: None,
                list_id: list_id.map(str::to_owned),
                pool: None,
                source_ip: None,
                sender_domain: None,
            }),
        };
        let json = |e: &Event| {
            serde_json::to_value(payload(e, "unsubscribed", &Apply::default())).unwrap()
        };
        let with = json(&event(Some("weekly.news.test")));
        assert_eq!(with["list_id"], "weekly.news.test");
        assert_eq!(with["recipient"], "a@b.test");
        let without = json(&event(None));
        assert!(without.get("list_id").is_none(), "{without}");
    }
}
