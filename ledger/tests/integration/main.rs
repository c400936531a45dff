//! Integration tests of the ledger against real stores (SQLite files and a PostgreSQL server
//! from the testkit) and a real beanstalkd, gathered in one test binary. Run one module with
//! e.g. `cargo test -p hedwig-ledger --test integration writer::`.
//!
//! Addresses: 127.0.130.0/24; `suppressions` 127.0.140.40-49; `list_scope` 127.0.230.20-29.

mod claims;
mod common;
mod list_scope;
mod open;
mod queries;
mod suppressions;
mod webhooks;
mod writer;
mod writes;
