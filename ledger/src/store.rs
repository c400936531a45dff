//! [`Store`]: opening (SQLite or PostgreSQL by URL, schema migrated at open) and writing
//! batches of events.
//!
//! A batch is written in one transaction: the events go in with `ON CONFLICT (id) DO
//! NOTHING ... RETURNING id`, and only the events that were new change the derived rows
//! (messages, recipients, hourly), so writing a batch twice changes nothing. On PostgreSQL
//! the writers of several post offices take a transaction-scoped advisory lock, so that the
//! read-modify-write of the derived rows is serialized (SQLite serializes writers itself).
//!
//! All SQL is constant text with bind parameters (`$1`...); the only text built at run time
//! is the number of `($n, ...)` groups of a multi-row statement.
//!
//! Not here: the read queries (`query`), the rules of the derived rows (`apply`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hedwig_queue::event::{Event, What};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::apply::Apply;
use crate::error::StoreError;
use crate::model::{address_key, Message, MessageStatus, Recipient};
use crate::schema;
use crate::suppress::{self, AutoPolicy};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a store connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a call waits for a connection before it fails with
    /// [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// SQLite: make the file (and its directory) when missing. Off for tools that only read
    /// a store a daemon made.
    pub create: bool,
    /// Migrate the schema to [`schema::VERSION`] at open. Off for `check-config`, which must
    /// not change the database it checks: a store at an older version then opens as it is
    /// (see [`Store::schema_version`]); one at a newer version is still refused.
    pub migrate: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            create: true,
            migrate: true,
        }
    }
}

/// The ledger store: a connection pool on SQLite or PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// What [`Store::write`] adds to the suppression list by itself.
    pub(crate) auto: AutoPolicy,
    /// Webhook endpoints the writer fills the outbox for (none by default; see
    /// [`Store::with_webhooks`]).
    pub(crate) webhooks: std::sync::Arc<Vec<crate::webhook::Route>>,
    /// Woken when a write of this process put rows in the webhook outbox, so that a
    /// dispatcher in the same process sends them at once instead of at its next poll.
    pub(crate) outbox_filled: std::sync::Arc<tokio::sync::Notify>,
}

/// The advisory lock key writers and the pruner take on PostgreSQL ("hedwig13").
const WRITE_LOCK: i64 = 0x6865_6477_6967_3133;

pub(crate) const EVENT_COLUMNS: &str =
    "id, queue_id, at, kind, recipient, outcome, mx, ip, tls, code, dsn, reply, detail";
pub(crate) const MESSAGE_COLUMNS: &str = "queue_id, host, sender, message_id, subject, size, \
     edge_id, edge_client, post_client, kind, bounce_of, queued_at, expires_at, recipients, \
     status, last_event_at, final_at, app, lane, fixups";
pub(crate) const RECIPIENT_COLUMNS: &str =
    "queue_id, recipient, queued_at, status, attempts, code, dsn, reply, mx, updated_at, is_final";

/// Rows per multi-row statement (SQLite allows 32,766 parameters, PostgreSQL 65,535).
const CHUNK: usize = 500;

impl Store {
    /// Opens the store at `url` with default [`Options`]: `sqlite://PATH` (the file and its
    /// directory are made when missing; WAL journal) or `postgres://USER@HOST/DATABASE`.
    /// Migrates the schema to [`schema::VERSION`].
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, Options::default()).await
    }

    /// [`Store::open`] with `options`.
    pub async fn open_with(url: &str, options: Options) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = connect_url(url, options.create)?;
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // A committed batch survives a power cut before its jobs are
                        // deleted (SQLite's default, said here rather than assumed).
                        sqlx::Executor::execute(&mut *conn, "PRAGMA synchronous = FULL").await?;
                        // Pages read through a memory map (no read() and copy per page) and a
                        // page cache of 32 MiB per connection instead of 2: the writer, the
                        // webhook outbox and the API read back what was just written, and a
                        // profile with the defaults showed SQLite reading those pages back
                        // from the kernel (read(), copy_to_iter) on every claim and mark.
                        sqlx::Executor::execute(
                            &mut *conn,
                            "PRAGMA mmap_size = 268435456; PRAGMA cache_size = -32768",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store {
            pool,
            backend,
            auto: AutoPolicy::default(),
            webhooks: Default::default(),
            outbox_filled: Default::default(),
        };
        if backend == Backend::Sqlite && options.migrate {
            // Persistent in the file: readers never block the writer nor the other way (set
            // by the opening that migrates: a check changes nothing).
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_all(&store.pool)
                .await?;
        }
        if options.migrate {
            store.migrate().await?;
        } else {
            store.refuse_newer().await?;
        }
        Ok(store)
    }

    /// The store with `policy` for the suppressions [`Store::write`] adds (default:
    /// [`AutoPolicy::default`]).
    pub fn with_auto_suppression(mut self, policy: AutoPolicy) -> Store {
        self.auto = policy;
        self
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(version) FROM schema_version")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    /// Fails when the database is at a newer schema version than this build knows (a store an
    /// upgraded post office migrated), without changing anything. A database with no
    /// `schema_version` table yet counts as version 0.
    async fn refuse_newer(&self) -> Result<(), StoreError> {
        let found = match self.schema_version().await {
            Ok(found) => found,
            // No such table: nothing was ever migrated here. Any other error is reported.
            Err(StoreError::Database(sqlx::Error::Database(db)))
                if db.code().as_deref() == Some("42P01")
                    || db.message().contains("no such table") =>
            {
                0
            }
            Err(e) => return Err(e),
        };
        if found > schema::VERSION {
            return Err(StoreError::Schema {
                found,
                known: schema::VERSION,
            });
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.lock(&mut tx).await?;
        sqlx::query(schema::VERSION_TABLE).execute(&mut *tx).await?;
        let row = sqlx::query("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?;
        let found = row.try_get::<Option<i64>, _>(0)?.unwrap_or(0);
        if found > schema::VERSION {
            return Err(StoreError::Schema {
                found,
                known: schema::VERSION,
            });
        }
        if found == schema::VERSION {
            return Ok(());
        }
        for (i, statements) in schema::MIGRATIONS.iter().enumerate() {
            if (i as i64) < found {
                continue;
            }
            for statement in *statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
        }
        sqlx::query("DELETE FROM schema_version")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(schema::VERSION)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(from = found, to = schema::VERSION, "ledger schema migrated");
        Ok(())
    }

    /// On PostgreSQL: serializes this transaction with the other writers' (released at its
    /// end). SQLite: nothing (one writer at a time anyway).
    pub(crate) async fn lock(&self, tx: &mut Transaction<'_, Any>) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(WRITE_LOCK)
                .fetch_all(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Writes `events` in one transaction and returns how many were new. Events already
    /// stored (same id) change nothing; the derived rows take the new ones in whatever
    /// order they come (see `apply`).
    pub async fn write(&self, events: &[Event]) -> Result<usize, StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<&Event> = events
            .iter()
            .filter(|e| seen.insert(e.id.as_str()))
            .collect();
        if unique.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        // The first statement of a write takes SQLite's write lock, so that nothing this
        // transaction reads can change before it commits.
        self.lock(&mut tx).await?;
        let new_ids = insert_events(self.backend, &mut tx, &unique).await?;
        let new: Vec<&Event> = unique
            .into_iter()
            .filter(|e| new_ids.contains(&e.id))
            .collect();
        if new.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut touched: Vec<String> = new.iter().map(|e| e.queue_id.clone()).collect();
        touched.sort();
        touched.dedup();
        let messages = load_messages(self.backend, &mut tx, &touched).await?;
        let recipients = load_recipients(self.backend, &mut tx, &touched).await?;
        let mut apply = Apply::new(messages, recipients);

        // Messages stored before without a host that get it now: their earlier events were
        // not counted in `hourly` yet.
        let queued_now: HashSet<&str> = new
            .iter()
            .filter(|e| matches!(e.what, What::Queued(_)))
            .map(|e| e.queue_id.as_str())
            .collect();
        let late: Vec<String> = apply
            .messages
            .values()
            .filter(|m| m.host.is_none() && queued_now.contains(m.queue_id.as_str()))
            .map(|m| m.queue_id.clone())
            .collect();
        for queue_id in &late {
            let rows = sqlx::query(
                "SELECT id, at, outcome FROM events WHERE queue_id = $1 AND kind = 'recipient'",
            )
            .bind(queue_id.clone())
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let id: String = row.try_get(0)?;
                if new_ids.contains(&id) {
                    continue;
                }
                let at: i64 = row.try_get(1)?;
                let outcome: Option<String> = row.try_get(2)?;
                if let Some(outcome) = outcome {
                    apply.uncounted(queue_id, at.max(0) as u64, &outcome);
                }
            }
        }

        apply.events(&new);
        upsert_messages(self.backend, &mut tx, &apply).await?;
        upsert_recipients(self.backend, &mut tx, &apply).await?;
        add_hourly(self.backend, &mut tx, &apply.hourly).await?;
        // Hooks on the batch's new events, in its transaction (one place; see each module).
        let late: HashSet<String> = late.into_iter().collect();
        let suppressions = suppress::auto(&self.auto, &apply, &new, &late);
        suppress::upsert(&mut tx, &suppressions, suppress::Merge::Auto, now_ms()).await?;
        let outbox =
            crate::webhook::enqueue(self.backend, &mut tx, &self.webhooks, &new, &apply).await?;
        tx.commit().await?;
        if outbox > 0 {
            self.outbox_filled.notify_waiters();
        }
        Ok(new.len())
    }
}

/// The URL sqlx connects to, and the backend. SQLite: `mode=rwc` (create when missing, and
/// make the file's directory) or, without `create`, `mode=rw`, unless the URL says otherwise.
fn connect_url(url: &str, create: bool) -> Result<(Backend, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(StoreError::Url(url.to_owned()));
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(StoreError::Url(url.to_owned()));
    }
    if path != ":memory:" && create {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
            }
        }
    }
    let mode = if create { "rwc" } else { "rw" };
    let url = match query {
        Some(q) if q.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(q) => format!("sqlite://{path}?{q}&mode={mode}"),
        None => format!("sqlite://{path}?mode={mode}"),
    };
    Ok((Backend::Sqlite, url))
}

/// `($1, $2, $3), ($4, $5, $6)` for 2 rows of 3 columns; on SQLite `(?, ?, ?), (?, ?, ?)`
/// (numbered or named parameters are looked up in a list, one by one, when the statement is
/// parsed and again when each is bound: quadratic in a statement of thousands).
pub(crate) fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut s = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..columns {
            if c > 0 {
                s.push_str(", ");
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(r * columns + c + 1).to_string());
                }
            }
        }
        s.push(')');
    }
    s
}

/// `$from, $from+1, ...`: `count` placeholders for an `IN (...)` list (on SQLite `?, ?...`,
/// see [`placeholders`]; then the list must hold every parameter of its statement).
pub(crate) fn list(backend: Backend, from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| match backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    hedwig_queue::event::now_millis()
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn kind_of(what: &What) -> &'static str {
    match what {
        What::Queued(_) => "queued",
        What::Recipient(_) => "recipient",
        What::BounceQueued { .. } => "bounce_queued",
    }
}

async fn insert_events(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    events: &[&Event],
) -> Result<HashSet<String>, StoreError> {
    let mut new = HashSet::new();
    for chunk in events.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING \
             RETURNING id",
            placeholders(backend, chunk.len(), 13)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for e in chunk {
            let detail =
                serde_json::to_string(e).map_err(|err| StoreError::Corrupt(err.to_string()))?;
            let r = match &e.what {
                What::Recipient(r) => Some(r),
                _ => None,
            };
            q = q
                .bind(e.id.clone())
                .bind(e.queue_id.clone())
                .bind(ms(e.at))
                .bind(kind_of(&e.what))
                .bind(r.map(|r| address_key(&r.recipient)))
                .bind(r.map(|r| r.outcome.as_str()))
                .bind(r.and_then(|r| r.mx.clone()))
                .bind(r.and_then(|r| r.ip.clone()))
                .bind(r.and_then(|r| r.tls).map(i64::from))
                .bind(r.and_then(|r| r.code).map(i64::from))
                .bind(r.and_then(|r| r.dsn.clone()))
                .bind(r.map(|r| r.reply.clone()))
                .bind(detail);
        }
        for row in q.fetch_all(&mut **tx).await? {
            new.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(new)
}

async fn load_messages(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    queue_ids: &[String],
) -> Result<Vec<Message>, StoreError> {
    let mut out = Vec::new();
    for chunk in queue_ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id IN ({})",
            list(backend, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            out.push(message_from_row(&row)?);
        }
    }
    Ok(out)
}

async fn load_recipients(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    queue_ids: &[String],
) -> Result<Vec<(String, Recipient)>, StoreError> {
    let mut out = Vec::new();
    for chunk in queue_ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id IN ({})",
            list(backend, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            out.push((row.try_get("queue_id")?, recipient_from_row(&row)?));
        }
    }
    Ok(out)
}

async fn upsert_messages(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    apply: &Apply,
) -> Result<(), StoreError> {
    let messages: Vec<&Message> = apply.messages.values().collect();
    for chunk in messages.chunks(CHUNK / 2) {
        let sql = format!(
            "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES {} ON CONFLICT (queue_id) DO \
             UPDATE SET host = excluded.host, sender = excluded.sender, \
             message_id = excluded.message_id, subject = excluded.subject, \
             size = excluded.size, edge_id = excluded.edge_id, \
             edge_client = excluded.edge_client, post_client = excluded.post_client, \
             kind = excluded.kind, bounce_of = excluded.bounce_of, \
             queued_at = excluded.queued_at, expires_at = excluded.expires_at, \
             recipients = excluded.recipients, status = excluded.status, \
             last_event_at = excluded.last_event_at, final_at = excluded.final_at, \
             app = excluded.app, lane = excluded.lane, fixups = excluded.fixups",
            placeholders(backend, chunk.len(), 20)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for m in chunk {
            q = q
                .bind(m.queue_id.clone())
                .bind(m.host.clone())
                .bind(m.sender.clone())
                .bind(m.message_id.clone())
                .bind(m.subject.clone())
                .bind(m.size.map(ms))
                .bind(m.edge_id.clone())
                .bind(m.edge_client.clone())
                .bind(m.post_client.clone())
                .bind(m.kind.clone())
                .bind(m.bounce_of.clone())
                .bind(ms(m.queued_at))
                .bind(m.expires_at.map(ms))
                .bind(ms(m.recipients))
                .bind(m.status.as_str())
                .bind(ms(m.last_event_at))
                .bind(m.final_at.map(ms))
                .bind(m.app.clone())
                .bind(m.lane.clone())
                .bind(fixups_column(&m.fixups));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn upsert_recipients(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    apply: &Apply,
) -> Result<(), StoreError> {
    let mut rows: Vec<(&str, &Recipient, u64)> = Vec::new();
    for (queue_id, address) in &apply.dirty {
        let recipient = apply
            .recipients
            .get(queue_id)
            .and_then(|rs| rs.get(address));
        let queued_at = apply.messages.get(queue_id).map(|m| m.queued_at);
        if let (Some(r), Some(queued_at)) = (recipient, queued_at) {
            rows.push((queue_id, r, queued_at));
        }
    }
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO recipients ({RECIPIENT_COLUMNS}) VALUES {} ON CONFLICT (queue_id, \
             recipient) DO UPDATE SET queued_at = excluded.queued_at, \
             status = excluded.status, attempts = excluded.attempts, code = excluded.code, \
             dsn = excluded.dsn, reply = excluded.reply, mx = excluded.mx, \
             updated_at = excluded.updated_at, is_final = excluded.is_final",
            placeholders(backend, chunk.len(), 11)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for (queue_id, r, queued_at) in chunk {
            q = q
                .bind(queue_id.to_string())
                .bind(r.recipient.clone())
                .bind(ms(*queued_at))
                .bind(r.status.clone())
                .bind(i64::from(r.attempts))
                .bind(r.code.map(i64::from))
                .bind(r.dsn.clone())
                .bind(r.reply.clone())
                .bind(r.mx.clone())
                .bind(ms(r.updated_at))
                .bind(i64::from(r.is_final));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn add_hourly(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    hourly: &HashMap<(String, u64, String), u64>,
) -> Result<(), StoreError> {
    let rows: Vec<_> = hourly.iter().collect();
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO hourly (host, hour, outcome, count) VALUES {} ON CONFLICT (host, \
             hour, outcome) DO UPDATE SET count = hourly.count + excluded.count",
            placeholders(backend, chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for ((host, hour, outcome), count) in chunk {
            q = q
                .bind(host.clone())
                .bind(ms(*hour))
                .bind(outcome.clone())
                .bind(ms(**count));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The `fixups` column: the names comma-separated (the post office allows only `a-z`, `0-9`
/// and `-` in them), NULL for none.
fn fixups_column(fixups: &[String]) -> Option<String> {
    (!fixups.is_empty()).then(|| fixups.join(","))
}

/// The names in a `fixups` column.
fn fixups_from_column(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A `messages` row (columns as [`MESSAGE_COLUMNS`]).
pub(crate) fn message_from_row(row: &AnyRow) -> Result<Message, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Message {
        queue_id: row.try_get("queue_id")?,
        host: row.try_get("host")?,
        sender: row.try_get("sender")?,
        message_id: row.try_get("message_id")?,
        subject: row.try_get("subject")?,
        size: row.try_get::<Option<i64>, _>("size")?.map(u),
        edge_id: row.try_get("edge_id")?,
        edge_client: row.try_get("edge_client")?,
        post_client: row.try_get("post_client")?,
        app: row.try_get("app")?,
        lane: row.try_get("lane")?,
        fixups: row
            .try_get::<Option<String>, _>("fixups")?
            .map(|list| fixups_from_column(&list))
            .unwrap_or_default(),
        kind: row.try_get("kind")?,
        bounce_of: row.try_get("bounce_of")?,
        queued_at: u(row.try_get("queued_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(u),
        recipients: u(row.try_get("recipients")?),
        status: MessageStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("message status {status:?}")))?,
        last_event_at: u(row.try_get("last_event_at")?),
        final_at: row.try_get::<Option<i64>, _>("final_at")?.map(u),
    })
}

/// A `recipients` row (columns as [`RECIPIENT_COLUMNS`]).
pub(crate) fn recipient_from_row(row: &AnyRow) -> Result<Recipient, StoreError> {
    Ok(Recipient {
        recipient: row.try_get("recipient")?,
        status: row.try_get("status")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        code: row
            .try_get::<Option<i64>, _>("code")?
            .and_then(|c| u16::try_from(c).ok()),
        dsn: row.try_get("dsn")?,
        reply: row.try_get("reply")?,
        mx: row.try_get("mx")?,
        updated_at: u(row.try_get("updated_at")?),
        is_final: row.try_get::<i64, _>("is_final")? != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            connect_url("postgres://u@h/d", true).unwrap(),
            (Backend::Postgres, "postgres://u@h/d".into())
        );
        assert_eq!(
            connect_url("sqlite://ledger.db", true).unwrap(),
            (Backend::Sqlite, "sqlite://ledger.db?mode=rwc".into())
        );
        assert_eq!(
            connect_url("sqlite://x.db?mode=ro", true).unwrap().1,
            "sqlite://x.db?mode=ro"
        );
        assert_eq!(
            connect_url("sqlite://x.db", false).unwrap().1,
            "sqlite://x.db?mode=rw"
        );
        assert_eq!(
            connect_url("sqlite://x.db?cache=shared", true).unwrap().1,
            "sqlite://x.db?cache=shared&mode=rwc"
        );
        for bad in ["", "mysql://x", "sqlite://", "ledger.db"] {
            assert!(
                matches!(connect_url(bad, true), Err(StoreError::Url(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn placeholder_lists() {
        let pg = Backend::Postgres;
        assert_eq!(placeholders(pg, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(list(pg, 3, 2), "$3, $4");
        assert_eq!(placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
