//! Integration tests of `mailman`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p mailman --test integration bad_input::`.

mod common;

mod app_identity;
mod bad_input;
mod docker_identity;
mod e2e_clients;
mod e2e_outage;
mod edge_slots;
mod header_fixups;
mod in_memory_session;
mod key_file_modes;
mod key_health;
mod loss_after_250;
mod mail_loop;
mod old_postoffice;
mod postoffice_answers;
mod security;
mod signed_forward;
mod smtp_auth;
mod smuggling;
mod spool_privacy;
mod status;
mod tls_postoffice;
