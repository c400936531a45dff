//! Integration tests of `hedwig-queue` against a real beanstalkd (testkit), gathered in one
//! test binary. Run one module with e.g. `cargo test -p hedwig-queue --test integration hold_cache::`.

mod emit;
mod hold_cache;
