//! Integration tests of `e2e`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p e2e --test integration bounce::`.

mod common;

mod bounce;
mod bounce_in;
mod draining;
mod fixups_ledger;
mod header_fixups;
mod lanes_fairness;
mod ledger;
mod ledger_events;
mod list_unsubscribe;
mod mail_loop;
mod metric_names;
mod msmtp_plain;
mod msmtp_t;
mod php_mail;
mod postoffice_outage;
mod suppression;
mod swaks;
mod transparency;
mod tube_prefix;
mod unsubscribe;
mod webhooks;
