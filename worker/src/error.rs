//! Why a delivery did not succeed, and the one place that decides retry versus bounce.
//!
//! Every failure in routing, DNS, connecting, TLS and the SMTP dialogue ends up as an
//! [`Error`]; [`Error::is_permanent`] is an exhaustive `match` and the only place that
//! classifies. A remote reply is classified by its code: 5xx permanent, everything else that
//! is not success (4xx, and codes a server should not have sent) temporary.

use std::time::Duration;

use crate::smtp::reply::Reply;

/// A phase of an SMTP session, for timeouts and log messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    DataInit,
    DataBlock,
    DataDone,
    Rset,
    Quit,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::DataInit => "DATA",
            Phase::DataBlock => "message transfer",
            Phase::DataDone => "end of DATA",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-success reply.
    #[error("{phase}: {reply}")]
    Rejected { phase: Phase, reply: Reply },
    /// DNS did not answer usefully (SERVFAIL, timeout, refused): never treated as "no MX".
    #[error("DNS lookup of {name} failed: {detail}")]
    DnsTemporary { name: String, detail: String },
    /// The recipient domain does not exist (NXDOMAIN).
    #[error("domain {0} does not exist (NXDOMAIN)")]
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("domain {0} accepts no mail (null MX, RFC 7505)")]
    NullMx(String),
    /// Neither the MX hosts nor (without MX) the domain itself have an address.
    #[error("no mail host address for {domain}: {detail}")]
    NoMailHost { domain: String, detail: String },
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timeout after {after:?} in {phase}")]
    Timeout { phase: Phase, after: Duration },
    #[error("connection closed by server in {0}")]
    Closed(Phase),
    #[error("I/O error in {phase}: {source}")]
    Io {
        phase: Phase,
        #[source]
        source: std::io::Error,
    },
    /// The server's reply broke the protocol.
    #[error("protocol error in {phase}: {detail}")]
    Protocol { phase: Phase, detail: String },
    /// TLS was required but not offered, or the handshake or verification failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The recipient domain's MTA-STS policy (RFC 8461, mode `enforce`) forbids this
    /// delivery: the MX host is not listed, it offers no STARTTLS, or its certificate is not
    /// valid for its name. Always deferred (the policy or the host may be fixed).
    #[error("mta-sts: {}: {detail} (policy of {domain})", result.rule())]
    MtaSts {
        domain: String,
        result: crate::mta_sts::ResultType,
        detail: String,
    },
    /// The login at a relayhost or transport failed or was not attempted (535, no AUTH
    /// offered, no verified TLS): the operator's problem, never the recipient's, so always
    /// deferred. `transport` names the config entry (`relayhost`, `transports.<domain>`).
    #[error("login at {transport} failed: {detail}")]
    Auth { transport: String, detail: String },
    /// The message or an address needs SMTPUTF8 and the server does not offer it.
    #[error("the message needs SMTPUTF8 (RFC 6531) but {0} does not support it")]
    NeedsSmtpUtf8(String),
    /// The message is larger than the server's SIZE (RFC 1870) or our own limit.
    #[error("message size {size} exceeds the limit of {limit} of {by}")]
    TooBig {
        size: usize,
        limit: usize,
        by: String,
    },
    /// The recipient address is not a valid mailbox.
    #[error("invalid recipient address: {0}")]
    BadAddress(String),
    /// An address literal outside `address_literals.allow`: never connected to.
    #[error("{0}")]
    LiteralRefused(String),
    /// The queue lifetime ran out while deliveries kept failing temporarily.
    #[error("gave up after the maximum queue lifetime; last error: {0}")]
    Expired(String),
    /// The message has passed more relays than `hop_limit` allows: it is going round in a
    /// circle (RFC 5321 §6.3).
    #[error("mail loop: too many hops ({hops} Received headers)")]
    Loop { hops: usize },
    /// Something on this machine failed (capture Maildir, no TLS config).
    #[error("local error: {0}")]
    Local(String),
    /// The destination is at its configured cap or cooling down after it asked us to slow
    /// down; try again after `retry_after`.
    #[error("{destination}: {why}, retry in {retry_after:?}")]
    Throttled {
        destination: String,
        why: &'static str,
        retry_after: Duration,
    },
}

impl Error {
    /// Whether retrying cannot help: bounce the recipients.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Rejected { reply, .. } => reply.class() == 5,
            Error::NoSuchDomain(_)
            | Error::NullMx(_)
            | Error::NoMailHost { .. }
            | Error::NeedsSmtpUtf8(_)
            | Error::TooBig { .. }
            | Error::BadAddress(_)
            | Error::LiteralRefused(_)
            | Error::Loop { .. }
            | Error::Expired(_) => true,
            Error::DnsTemporary { .. }
            | Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Closed(_)
            | Error::Io { .. }
            | Error::Protocol { .. }
            | Error::Tls(_)
            | Error::MtaSts { .. }
            | Error::Auth { .. }
            | Error::Local(_)
            | Error::Throttled { .. } => false,
        }
    }

    /// A short machine-readable reason for the failed-tube record.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Rejected { .. } => "rejected",
            Error::DnsTemporary { .. } => "dns",
            Error::NoSuchDomain(_) => "no-domain",
            Error::NullMx(_) => "null-mx",
            Error::NoMailHost { .. } => "no-mx",
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Closed(_) => "closed",
            Error::Io { .. } => "io",
            Error::Protocol { .. } => "protocol",
            Error::Tls(_) => "tls",
            Error::MtaSts { .. } => "mta-sts",
            Error::Auth { .. } => "auth",
            Error::NeedsSmtpUtf8(_) => "smtputf8",
            Error::TooBig { .. } => "size",
            Error::BadAddress(_) => "bad-address",
            Error::LiteralRefused(_) => "address-literal",
            Error::Expired(_) => "expired",
            Error::Loop { .. } => "loop",
            Error::Local(_) => "local",
            Error::Throttled { .. } => "throttled",
        }
    }

    /// The remote reply code, when a server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Rejected { reply, .. } => Some(reply.code),
            _ => None,
        }
    }

    /// The RFC 3463 status: the server's own, or one chosen for local errors.
    pub fn dsn(&self) -> String {
        let permanent = self.is_permanent();
        let generic = |detail: &str| format!("{}.{detail}", if permanent { 5 } else { 4 });
        match self {
            Error::Rejected { reply, .. } => reply
                .dsn
                .clone()
                .unwrap_or_else(|| format!("{}.0.0", if reply.class() == 5 { 5 } else { 4 })),
            Error::DnsTemporary { .. } => "4.4.3".into(),
            Error::NoSuchDomain(_) => "5.1.2".into(),
            Error::NullMx(_) => "5.1.10".into(),
            Error::NoMailHost { .. } => "5.4.4".into(),
            Error::Connect { .. } => "4.4.1".into(),
            Error::Timeout { .. } | Error::Closed(_) | Error::Io { .. } => "4.4.2".into(),
            Error::Protocol { .. } => "4.5.0".into(),
            Error::Tls(_) => "4.7.5".into(),
            // RFC 3463 §3.8: security features not supported (a policy not met).
            Error::MtaSts { .. } => "4.7.5".into(),
            // RFC 3463 §3.8: security or policy status, other.
            Error::Auth { .. } => "4.7.0".into(),
            Error::NeedsSmtpUtf8(_) => "5.6.7".into(),
            Error::TooBig { .. } => "5.3.4".into(),
            Error::BadAddress(_) => "5.1.3".into(),
            // RFC 3463: delivery not authorized.
            Error::LiteralRefused(_) => "5.7.1".into(),
            Error::Expired(_) => "5.4.7".into(),
            // RFC 3463 §3.5: routing loop detected.
            Error::Loop { .. } => "5.4.6".into(),
            Error::Local(_) => generic("3.0"),
            Error::Throttled { .. } => "4.4.5".into(),
        }
    }

    /// Whether the destination asked us to slow down (421, or 4.7.x "too many"): the next
    /// attempt should wait instead of hammering it.
    pub fn is_slow_down(&self) -> bool {
        match self {
            Error::Rejected { reply, .. } => {
                reply.code == 421
                    || (reply.class() == 4
                        && reply.dsn.as_deref().is_some_and(|d| d.starts_with("4.7."))
                        && reply.text.to_ascii_lowercase().contains("too many"))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Error {
        Error::Rejected {
            phase: Phase::Rcpt,
            reply: Reply::from_text(text),
        }
    }

    #[test]
    fn reply_codes_decide() {
        assert!(rejected("550 5.1.1 no such user").is_permanent());
        assert!(rejected("554 no").is_permanent());
        assert!(!rejected("451 4.7.1 greylisted").is_permanent());
        assert!(!rejected("421 4.7.0 too many connections").is_permanent());
        // A code a server should not send here is treated as temporary, not as success.
        assert!(!rejected("354 go ahead").is_permanent());
        assert_eq!(rejected("550 nope").dsn(), "5.0.0");
        assert_eq!(rejected("452 4.2.2 full").dsn(), "4.2.2");
        assert_eq!(rejected("550 5.1.1 x").code(), Some(550));
    }

    #[test]
    fn dns_and_network_classification() {
        assert!(Error::NoSuchDomain("x".into()).is_permanent());
        assert!(Error::NullMx("x".into()).is_permanent());
        let servfail = Error::DnsTemporary {
            name: "x".into(),
            detail: "SERVFAIL".into(),
        };
        assert!(!servfail.is_permanent());
        assert_eq!(servfail.dsn(), "4.4.3");
        let timeout = Error::Timeout {
            phase: Phase::DataDone,
            after: Duration::from_secs(1),
        };
        assert!(!timeout.is_permanent());
        assert!(!Error::Tls("not offered".into()).is_permanent());
        let sts = Error::MtaSts {
            domain: "a.test".into(),
            result: crate::mta_sts::ResultType::MxNotInPolicy,
            detail: "mx.b.test is not among mx.a.test".into(),
        };
        assert!(!sts.is_permanent());
        assert_eq!((sts.reason(), sts.dsn().as_str()), ("mta-sts", "4.7.5"));
        assert!(sts.to_string().starts_with("mta-sts: mx not in policy: "));
        // A refused login is never the recipient's fault, whatever the code.
        let login = Error::Auth {
            transport: "relayhost".into(),
            detail: "535 5.7.8 Error: authentication failed".into(),
        };
        assert!(!login.is_permanent());
        assert_eq!((login.reason(), login.dsn().as_str()), ("auth", "4.7.0"));
        assert!(login.to_string().contains("relayhost") && login.to_string().contains("535"));
        assert!(Error::NeedsSmtpUtf8("mx".into()).is_permanent());
        assert_eq!(Error::Local("disk".into()).dsn(), "4.3.0");
        let looping = Error::Loop { hops: 51 };
        assert!(looping.is_permanent());
        assert_eq!(looping.dsn(), "5.4.6");
        assert_eq!(
            looping.to_string(),
            "mail loop: too many hops (51 Received headers)"
        );
    }

    #[test]
    fn slow_down_signals() {
        assert!(rejected("421 4.7.0 try later").is_slow_down());
        assert!(rejected("451 4.7.1 too many messages from you").is_slow_down());
        assert!(!rejected("451 4.7.1 greylisted, come back later").is_slow_down());
        assert!(!rejected("550 5.7.1 too many").is_slow_down());
    }
}
