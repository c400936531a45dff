//! Integration tests of `beanstalk`, gathered in one test binary: one link and one
//! executable instead of one per file. Run one module with e.g.
//! `cargo test -p beanstalk --test integration bad_server::`.

mod common;

mod bad_server;
mod job_too_big;
mod pipelined;
mod pool_concurrency;
mod release_bury_kick;
mod restart;
mod roundtrip_8bit;
mod stats;
mod timeouts;
mod tubes;
mod typed_errors;
