//! Integration tests of `message`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p message --test integration dkim_independent::`.

mod dkim_independent;
mod dsn_independent;
