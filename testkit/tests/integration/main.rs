//! Integration tests of `testkit`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p testkit --test integration dns::`.

mod dns;
mod postgres;
mod smtp_raw;
mod smtp_swaks;
