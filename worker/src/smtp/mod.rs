//! The SMTP client: reply parsing ([`reply`], no I/O), the session state machine over any
//! stream ([`session`]), and STARTTLS plumbing ([`tls`]).

pub mod reply;
pub mod session;
pub mod tls;
