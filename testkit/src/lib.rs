//! Real servers for hedwig's tests.
//!
//! Tests talk to the real thing wherever it can run on this machine: a `beanstalkd` process
//! started on a free loopback port (see [`beanstalkd`]). Everything here listens on
//! 127.0.0.0/8 only and is torn down when its handle is dropped.

pub mod beanstalkd;
pub mod net;

pub use beanstalkd::Beanstalkd;
