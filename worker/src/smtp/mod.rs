//! The SMTP client: reply parsing ([`reply`], no I/O), the session state machine over any
//! stream ([`session`]), SMTP AUTH as a state machine ([`auth`], no I/O), and TLS plumbing
//! ([`tls`]).

pub mod auth;
pub mod reply;
pub mod session;
pub mod tls;
