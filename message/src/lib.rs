//! Message composition for the worker: what hedwig adds to or makes from a message.
//!
//! Layout:
//! - [`dkim`]: DKIM signing (RFC 6376, RSA-SHA256 and Ed25519-SHA256 per RFC 8463) with keys
//!   loaded once from config; the DNS TXT record of a key; key generation for `keygen dkim`.
//! - [`dsn`]: RFC 3464 delivery status notifications (bounces) for permanently failed
//!   recipients.
//! - [`trace`]: the RFC 5321 §4.4 `Received:` trace header.
//! - [`Error`]: the one error type of this crate.
//!
//! Nothing here does network I/O, reads the clock or re-encodes a message body: times are
//! inputs, and messages are signed and quoted byte for byte.

pub mod dkim;
pub mod dsn;
mod error;
pub mod trace;

pub use error::Error;

/// An RFC 5322 §3.3 date-time (`Mon, 23 Nov 2026 04:15:31 +0000`) for Unix seconds, in UTC.
pub fn rfc5322_date(unix_seconds: u64) -> String {
    let secs = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    mail_parser::DateTime::from_timestamp(secs).to_rfc822()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(super::rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            super::rfc5322_date(1_795_407_331),
            "Mon, 23 Nov 2026 04:15:31 +0000"
        );
    }
}
