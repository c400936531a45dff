//! An async [beanstalkd](https://beanstalkd.github.io/) client on tokio.
//!
//! ```no_run
//! # async fn demo() -> beanstalk::Result<()> {
//! use std::time::Duration;
//! let mut c = beanstalk::Client::connect("127.0.0.1:11300").await?;
//! c.use_tube("mail").await?;
//! let id = c.put(b"hello", 1024, Duration::ZERO, Duration::from_secs(60)).await?;
//! c.watch("mail").await?;
//! let job = c.reserve_with_timeout(Duration::from_secs(5)).await?;
//! c.delete(job.id).await?;
//! # let _ = id;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`proto`]: the wire format: command encoding, incremental reply parsing with limits on
//!   line and body size, tube name rules. No I/O.
//! - [`stats`]: the YAML replies of `stats*` and `list-tubes*`.
//! - `conn`: buffered request/reply I/O on one stream (generic, tested in memory).
//! - [`client`]: [`Client`], one connection: every command, timeouts, reconnect on the
//!   next call after a connection error; `reserve_ready` and `delete_all` pipeline many
//!   commands in one write for consumers of many small jobs.
//! - [`pool`]: [`Pool`], bounded shared clients for concurrent `put`s.
//! - [`error`]: [`Error`], one variant per beanstalkd error reply, and
//!   [`Error::is_connection_error`].
//!
//! Not here: `quit`, the `stats`-only admin commands beyond those listed on [`Client`],
//! and any retry of a failed command (the caller decides; a `put` whose reply was lost may
//! have been queued).

#![warn(missing_docs)]

pub mod client;
mod conn;
pub mod error;
pub mod pool;
pub mod proto;
pub mod stats;

pub use client::{Client, Config, Ready, MAX_PIPELINE};
pub use error::{Error, Result};
pub use pool::{Pool, PooledClient};
pub use proto::Job;
pub use stats::Stats;
