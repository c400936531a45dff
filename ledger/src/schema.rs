//! The schema, one list of statements per version, run by [`crate::Store::open`] in one
//! transaction when the database is older than this build (`schema_version` holds the
//! version). The same SQL runs on SQLite and PostgreSQL: every integer is `BIGINT`, every
//! time Unix milliseconds, flags are 0/1, JSON is `TEXT`.
//!
//! Not here: the queries (`store`, `query`).

/// The newest schema version this build writes: one per entry of [`MIGRATIONS`].
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// `schema_version`: one row, the version the database is at.
pub(crate) const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)";

/// The statements that take the database from version `i` to `i + 1`, at index `i`. Public
/// for the tests that build an old database and open it with this build.
#[doc(hidden)]
pub const MIGRATIONS: &[&[&str]] = &[
    V1,
    SHARED_DEDUPE,
    SUPPRESSIONS,
    EDGE_ID,
    WEBHOOK_OUTBOX,
    APP_AND_LANE,
    FIXUPS,
    LIST_SCOPE,
];

/// The statements that take a database from version `from` to `from + 1` (for tests that
/// build an older database by hand).
pub fn migration(from: usize) -> Option<&'static [&'static str]> {
    MIGRATIONS.get(from).copied()
}

const V1: &[&str] = &[
    // Every event as it came, the first with each id.
    "CREATE TABLE events (
        id TEXT PRIMARY KEY,
        queue_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        recipient TEXT,
        outcome TEXT,
        mx TEXT,
        ip TEXT,
        tls BIGINT,
        code BIGINT,
        dsn TEXT,
        reply TEXT,
        detail TEXT NOT NULL
    )",
    "CREATE INDEX events_queue_at ON events (queue_id, at)",
    // One row per message, derived from its events.
    "CREATE TABLE messages (
        queue_id TEXT PRIMARY KEY,
        host TEXT,
        sender TEXT,
        message_id TEXT,
        subject TEXT,
        size BIGINT,
        edge_id TEXT,
        edge_client TEXT,
        post_client TEXT,
        kind TEXT NOT NULL,
        bounce_of TEXT,
        queued_at BIGINT NOT NULL,
        expires_at BIGINT,
        recipients BIGINT NOT NULL,
        status TEXT NOT NULL,
        last_event_at BIGINT NOT NULL,
        final_at BIGINT
    )",
    "CREATE INDEX messages_queued ON messages (queued_at, queue_id)",
    "CREATE INDEX messages_host ON messages (host, queued_at, queue_id)",
    "CREATE INDEX messages_sender ON messages (sender, queued_at, queue_id)",
    "CREATE INDEX messages_message_id ON messages (message_id)",
    "CREATE INDEX messages_open ON messages (queued_at) WHERE final_at IS NULL",
    // One row per recipient of a message; queued_at is the message's (the search order).
    "CREATE TABLE recipients (
        queue_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        queued_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        code BIGINT,
        dsn TEXT,
        reply TEXT,
        mx TEXT,
        updated_at BIGINT NOT NULL,
        is_final BIGINT NOT NULL,
        PRIMARY KEY (queue_id, recipient)
    )",
    "CREATE INDEX recipients_recipient ON recipients (recipient, queued_at, queue_id)",
    // Per sending host, per hour, per outcome (`queued` for queued messages).
    "CREATE TABLE hourly (
        host TEXT NOT NULL,
        hour BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (host, hour, outcome)
    )",
];

/// The duplicate-id window shared by the post offices of one store (`crate::claims`): one
/// row per (sending host, mailman message id) claimed in the window, its queue id once the
/// message is queued (NULL while the claiming post office is queueing it).
const SHARED_DEDUPE: &[&str] = &[
    "CREATE TABLE claims (
        host TEXT NOT NULL,
        message_id TEXT NOT NULL,
        queue_id TEXT,
        claimed_at BIGINT NOT NULL,
        claimed_by TEXT NOT NULL,
        PRIMARY KEY (host, message_id)
    )",
    "CREATE INDEX claims_claimed_at ON claims (claimed_at)",
];

/// The suppression list (issue 14): recipients mail is not sent to, per sender domain
/// (`scope`) or for every sender (`scope = '*'`). `recipient` is lowercased; `source` is
/// `auto` (a hard failure recorded by the writer), `operator` or `complaint`; `reply`, `code`
/// and `dsn` are the remote answer that caused it and `queue_id` its message; `expires_at`
/// NULL is permanent. `updated_at` is the time of the last write, so that a reader can tell
/// cheaply whether the list changed (`COUNT(*)`, `MAX(updated_at)`).
const SUPPRESSIONS: &[&str] = &[
    "CREATE TABLE suppressions (
        scope TEXT NOT NULL,
        recipient TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        reply TEXT,
        code BIGINT,
        dsn TEXT,
        queue_id TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (scope, recipient)
    )",
    "CREATE INDEX suppressions_recipient ON suppressions (recipient)",
    "CREATE INDEX suppressions_expires ON suppressions (expires_at)",
];

/// Lookups by the sending mailman's message id (`mailman status <id>`, the post office's
/// `POST /status`): without it such a lookup reads every message.
const EDGE_ID: &[&str] = &["CREATE INDEX messages_edge_id ON messages (edge_id)"];

/// The webhook outbox (issue 14, docs/webhooks.md): one row per (endpoint, event) to send,
/// inserted by the writer in the transaction that stores the event; `status` is `pending`,
/// `done` or `failed`. A dispatcher claims due rows by setting `lease_owner` and
/// `lease_until` in one UPDATE, so two post offices on one PostgreSQL never both send a row
/// inside a lease. `first_at` is where `max_age` counts from (reset by a manual retry).
const WEBHOOK_OUTBOX: &[&str] = &[
    "CREATE TABLE webhook_outbox (
        endpoint TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        recipient TEXT,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        first_at BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        last_code BIGINT,
        last_error TEXT,
        last_at BIGINT,
        done_at BIGINT,
        PRIMARY KEY (endpoint, event_id)
    )",
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (endpoint, status, next_at)",
    "CREATE INDEX webhook_outbox_recent ON webhook_outbox (endpoint, first_at)",
];

/// The app that sent a message (issue 17: a container's name or a mailman login) and the
/// lane it was queued in, from its `queued` event; NULL for messages from before, and for
/// mail whose mailman did not know the app.
const APP_AND_LANE: &[&str] = &[
    "ALTER TABLE messages ADD COLUMN app TEXT",
    "ALTER TABLE messages ADD COLUMN lane TEXT",
];

/// The header fix-ups the sending mailman made (issue 19), from the message's `queued` event:
/// the names comma-separated in mailman's order (`date,message-id,from,to`, `bcc`); NULL when
/// none were made, and for messages from before they were recorded.
const FIXUPS: &[&str] = &["ALTER TABLE messages ADD COLUMN fixups TEXT"];
/// Suppression entries for one mailing list (issue 19: a one-click unsubscribe from a
/// `List-Id:`): `list_id` (lowercase) names the list, NULL for an entry of the whole scope.
/// The primary key stays `(scope, recipient)`: a list's entry keeps `scope <list-id>` in
/// `scope` (`crate::suppress`), so a post office of the previous version goes on reading and
/// writing the table; it takes a list's entry for a scope that matches no sender domain, and
/// so ignores it.
const LIST_SCOPE: &[&str] = &["ALTER TABLE suppressions ADD COLUMN list_id TEXT"];
