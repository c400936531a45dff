//! Integration tests of `keygen`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p keygen --test integration cli::`.

mod cli;
mod dkim;
mod dns;
