//! Integration tests of `postoffice`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p postoffice --test integration admin_failed::`.

mod common;

mod address_literals;
mod admin_failed;
mod admin_help;
mod admin_purge;
mod admin_requeue;
mod admin_show_stats;
mod admin_tube_prefix;
mod admin_two_servers;
mod app_and_lanes;
mod bad_input;
mod bounce_listener_abuse;
mod bounce_listener_tls;
mod browser;
mod concurrency;
mod console_actions;
mod console_browser;
mod console_http;
mod console_lists;
mod console_support;
mod events;
mod fixups;
mod from_policy;
mod hold_release;
mod intake;
mod key_file_modes;
mod ledger;
mod lockout;
mod queue_outage;
mod rate_counts_recipients;
mod raw_form;
mod security;
mod shared_dedupe;
mod signed_posts;
mod status;
mod suppression_chain;
mod suppression_intake;
mod suppression_lists;
mod two_beanstalkd_failover;
mod unsubscribe_abuse;
mod webhooks;
mod webhooks_hold;
