//! SMTP, server side, without I/O: the session state machine, the DATA receiver and replies.
//!
//! Command lines are parsed by `smtp-proto`; framing, limits, sequencing and the DATA phase are
//! here, and SMTP AUTH's exchanges ([`auth`]). The tokio side ([`crate::drive`]) only moves bytes
//! and applies timeouts.
//!
//! The post office's bounce listener (issue 14) runs this same session with a
//! [`RecipientCheck`] that takes only its VERP tokens.

pub mod app_policy;
pub mod auth;
pub mod data;
pub mod hops;
pub mod reply;
pub mod session;

pub use app_policy::{AppPolicy, RateCheck};
pub use auth::{AuthOutcome, AuthPolicy, Credentials};
pub use reply::Reply;
pub use session::{
    Action, Message, RecipientCheck, Session, SessionConfig, Step, MAX_COMMAND_LINE,
};

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod tests;
