//! Integration tests of `worker`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p worker --test integration bad_job_buried::`.

mod common;

mod address_literals;
mod bad_job_buried;
mod bounce_amplification;
mod capture_maildir;
mod cli;
mod connection_reuse_and_slow_down;
mod deliver_end_to_end;
mod disconnect_and_size;
mod dkim_authorised;
mod dkim_signed;
mod dns_failures;
mod events;
mod expiry_bounce;
mod hold;
mod key_file_modes;
mod lanes;
mod line_endings;
mod mta_sts;
mod mx_fallback;
mod old_format_jobs;
mod partial_acceptance;
mod pools;
mod relay_transport_return_path;
mod retry_then_success;
mod security;
mod settings_checked;
mod shutdown_hands_back;
mod smarthost_login;
mod smtputf8;
mod tls;
mod tls_rpt;
mod touch_long_delivery;
mod tube_prefix;
mod two_beanstalkd_servers;
