//! The bounce listener (issue 14, late bounces and complaints): an inbound SMTP listener for
//! the VERP bounce domains' MX. It takes mail only to `bounces+<token>@<bounce domain>` with a
//! token this deployment made (`hedwig_core::verp`), reads RFC 3464 DSNs and RFC 5965 ARF
//! reports, and turns them into `bounced` / `complained` ledger events on the original message
//! and recipient, put into the events tube through the post office's emitters.
//!
//! Layout:
//! - [`config`]: the `bounce_listener:` settings, checked once.
//! - [`report`]: what one received message means: the events, or the refusal (no I/O).
//! - [`listener`]: accepting connections (caps, per-client caps) and running mailman's SMTP
//!   session ([`mailman::smtp::Session`], with a [`mailman::smtp::RecipientCheck`] that takes
//!   only valid tokens) through mailman's I/O loop ([`mailman::drive`]: deadlines,
//!   `min_data_rate`, STARTTLS), so both SMTP listeners share one session core.
//! - [`metrics`]: sessions by outcome and messages by result on `/metrics`.
//!
//! Not here: making the tokens (the worker's `verp:` setting), suppression of complained
//! addresses (a consumer of the `complained` event).

pub mod config;
pub mod listener;
pub mod metrics;
pub mod report;

pub use config::{BounceListenerConfig, BounceSettings};
