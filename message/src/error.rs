//! The one error type of `hedwig-message`.
//!
//! Configuration and key errors name the file or domain at fault; they happen at startup.
//! Per-message errors ([`Error::Sign`], [`Error::NoBounce`]) are the caller's to classify.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DKIM key file cannot be read.
    #[error("cannot read DKIM key {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A DKIM key file is not a usable private key.
    #[error("DKIM key {path} is not usable: {why}")]
    Key { path: PathBuf, why: String },
    /// The DKIM configuration is inconsistent (names the domain/selector at fault).
    #[error("DKIM configuration: {0}")]
    Config(String),
    /// Signing one message failed (a crypto library error; not expected with a loaded key).
    #[error("DKIM signing for {domain} failed: {why}")]
    Sign { domain: String, why: String },
    /// Generating a key pair failed.
    #[error("cannot generate a {algorithm} key: {why}")]
    Generate {
        algorithm: &'static str,
        why: String,
    },
    /// A bounce was asked for a message that must not bounce: the null sender, or a bounce.
    #[error("no bounce for {0}: a DSN never goes to the null sender or answers a bounce")]
    NoBounce(String),
    /// A bounce was asked for with no failed recipients.
    #[error("no bounce without a failed recipient")]
    NoRecipients,
}
