//! Message composition for the worker: what hedwig adds to or makes from a message.
//!
//! Layout:
//! - [`dkim`]: DKIM signing (RFC 6376, RSA-SHA256 and Ed25519-SHA256 per RFC 8463) with keys
//!   loaded once from config; the DNS TXT record of a key; key generation for `keygen dkim`.
//! - [`dsn`]: RFC 3464 delivery status notifications (bounces) for permanently failed
//!   recipients.
//! - [`report`]: reading RFC 3464 DSNs and RFC 5965 ARF complaints that come back to a VERP
//!   return path.
//! - [`trace`]: the RFC 5321 §4.4 `Received:` trace header.
//! - [`list`]: the list headers (`List-Id:`, an app's own `List-Unsubscribe:`) and the RFC 8058
//!   one-click fields the worker adds.
//! - [`smtp_form`]: line endings and line lengths as SMTP requires them, before signing.
//! - [`Error`]: the one error type of this crate.
//!
//! Nothing here does network I/O, reads the clock or re-encodes a message body: times are
//! inputs, and messages are signed and quoted byte for byte.

pub mod dkim;
pub mod dsn;
mod error;
pub mod list;
pub mod report;
pub mod trace;

pub use error::Error;

use std::borrow::Cow;

/// Longest line SMTP allows, without its CRLF (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// The message as it has to go on the wire: every line ends in CRLF (a bare LF or a bare CR,
/// as the original Python hedwig clients send, becomes CRLF; RFC 5321 §2.3.8) and no line is
/// longer than 998 octets (a longer one is folded by inserting CRLF and a space, as Postfix's
/// `smtp_line_length_limit` does). The worker applies this before DKIM signing so that the
/// signature covers the bytes the receiver gets. Returns the input untouched when it already
/// conforms (the common case: mailman normalizes line endings).
pub fn smtp_form(message: &[u8]) -> Cow<'_, [u8]> {
    if conforms(message) {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 2);
    let mut line = 0;
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                line = 0;
                if message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line = 0;
            }
            b => {
                if line == MAX_LINE {
                    out.extend_from_slice(b"\r\n ");
                    line = 1;
                }
                out.push(b);
                line += 1;
            }
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn conforms(message: &[u8]) -> bool {
    let mut line = 0;
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                line = 0;
                i += 1;
            }
            b'\r' | b'\n' => return false,
            _ => {
                line += 1;
                if line > MAX_LINE {
                    return false;
                }
            }
        }
        i += 1;
    }
    true
}

/// An RFC 5322 §3.3 date-time (`Mon, 23 Nov 2026 04:15:31 +0000`) for Unix seconds, in UTC.
pub fn rfc5322_date(unix_seconds: u64) -> String {
    let secs = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    mail_parser::DateTime::from_timestamp(secs).to_rfc822()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_form_fixes_line_ends_and_folds_long_lines() {
        let ok = b"Subject: x\r\n\r\nbody\r\n";
        assert!(matches!(smtp_form(ok), Cow::Borrowed(_)));
        assert_eq!(&*smtp_form(b"a\nb\r\nc\rd\n"), b"a\r\nb\r\nc\r\nd\r\n");
        let long = vec![b'x'; 2000];
        let folded = smtp_form(&long).into_owned();
        let lines: Vec<&[u8]> = folded.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE + 1, "998 octets and the CR");
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE + 1));
        assert_eq!(
            folded.iter().filter(|&&b| b == b'x').count(),
            2000,
            "nothing lost"
        );
        let exact = vec![b'y'; MAX_LINE];
        assert!(matches!(smtp_form(&exact), Cow::Borrowed(_)));
        // 8-bit bytes are kept as they are
        assert_eq!(&*smtp_form(b"caf\xe9\n"), b"caf\xe9\r\n");
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(super::rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            super::rfc5322_date(1_795_407_331),
            "Mon, 23 Nov 2026 04:15:31 +0000"
        );
    }
}
