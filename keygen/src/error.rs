//! The one error type of the keygen library.

use std::path::PathBuf;

/// What went wrong while making keys or checking DNS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A domain name given by the operator is unusable.
    #[error("domain {domain:?}: {why}")]
    InvalidDomain { domain: String, why: String },
    /// A DKIM selector is not a DNS label sequence.
    #[error("selector {0:?}: not a DNS name (letters, digits, '-', '_', '.')")]
    InvalidSelector(String),
    /// `keygen dkim` would overwrite a key without `--force`.
    #[error("{}: already exists (pass --force to replace it)", .0.display())]
    KeyExists(PathBuf),
    /// `--out-dir` names something that is not a folder.
    #[error("{}: not a directory (--out-dir must be a folder, or not exist yet)", .0.display())]
    NotADirectory(PathBuf),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Key generation or key loading failed in `hedwig_message::dkim`.
    #[error(transparent)]
    Dkim(#[from] hedwig_message::Error),
    /// A DNS query failed for another reason than "no such record" (timeout, SERVFAIL).
    #[error("DNS lookup of {name} failed: {detail}")]
    Dns { name: String, detail: String },
    /// The worker config or a `--dkim-key` could not be used.
    #[error("{0}")]
    Config(String),
    /// The resolver could not be built from the given nameservers.
    #[error("DNS resolver: {0}")]
    Resolver(String),
}
