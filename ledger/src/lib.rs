//! The delivery ledger: every message's events on record, searchable, and a check that
//! nothing is left without an end (issue 13, docs/ledger.md).
//!
//! The post office and the workers put [`hedwig_queue::event`] batches into the events tube;
//! the [`writer`] moves them into a [`Store`] (SQLite by default, PostgreSQL for a fleet:
//! one schema, the same queries); the admin API, `postoffice trace` and `postoffice stuck`
//! read it.
//!
//! # Layout
//!
//! - [`store`]: [`Store`]: open by URL (schema migrated at open), write a batch of events in
//!   one transaction, idempotent by event id.
//! - `apply`: the rules that derive messages, recipients and hourly counts from events, in
//!   any order (no I/O).
//! - `query`: search (filters, cursor pagination), timeline, hourly counts, stuck messages,
//!   pruning (methods of [`Store`]).
//! - [`claims`]: the duplicate-id window shared by the post offices of one store: claim,
//!   complete, release, prune (methods of [`Store`]).
//! - [`model`]: what the store answers and is asked ([`Message`], [`Timeline`], [`Filter`]...).
//! - [`schema`]: the tables, one list of statements per version.
//! - [`webhook`]: the webhook outbox: which events go to which endpoint, their payload, and
//!   the rows a dispatcher claims and marks (filled by [`Store::write`]).
//! - [`writer`]: events tube -> store, with batching, backoff and no loss.
//! - [`suppress`]: the suppression list: which failures add an entry (the writer's hook),
//!   and its queries.
//! - [`error`]: the one error type, [`StoreError`].
//!
//! Not here: emitting events (post office, worker), the HTTP API and the CLI (post office).

mod apply;
pub mod claims;
pub mod error;
pub mod model;
mod query;
pub mod schema;
pub mod store;
pub mod suppress;
pub mod webhook;
pub mod writer;

pub use claims::{ClaimLimits, ClaimRow, Claimed};
pub use error::StoreError;
pub use model::{Cursor, Filter, HourlyCount, Message, MessageStatus, Page, Recipient, Timeline};
pub use store::{Backend, Options, Store};
pub use suppress::{AutoPolicy, ListMatch, Source, Suppression, SuppressionFilter};
pub use writer::{WriterConfig, WriterStats};
