//! Mail loop detection: counting the `Received:` trace fields of a message.
//!
//! Every MTA that takes a message adds one `Received:` field (RFC 5321 §4.4), so a message
//! that travels in a circle (an MX or relayhost that leads back to a mailman whose networks
//! include this worker) gains one per pass. RFC 5321 §6.3: "a simple counting of the number
//! of Received: header fields in a message has proven to be an effective, although rarely
//! optimal, method of detecting loops". Postfix stops at 50 (`hopcount_limit`), Exim at 30.
//!
//! The scan reads the header section only, at most [`MAX_SCAN`] bytes: a hostile message
//! cannot make it expensive.
//!
//! Not here: what happens to a looping message ([`crate::queue`] fails every recipient with
//! [`crate::error::Error::Loop`], which bounces like any permanent failure).

/// At most this much of a message is scanned for `Received:` fields.
pub const MAX_SCAN: usize = 1024 * 1024;

/// The number of `Received:` fields in the header section of `message` (in its first
/// [`MAX_SCAN`] bytes).
pub fn received_count(message: &[u8]) -> usize {
    let scan = &message[..message.len().min(MAX_SCAN)];
    let mut count = 0;
    for line in scan.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // RFC 5322 §2.1: the header section ends at the first empty line.
            break;
        }
        if is_field(line, b"received") {
            count += 1;
        }
    }
    count
}

/// Whether `line` starts the header field `name` (case-insensitive; RFC 5322 §3.6.7 allows
/// white space before the colon in the obsolete syntax).
fn is_field(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            .is_some_and(|&b| b == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_received_fields_in_the_header_section_only() {
        let m = b"Received: from a\r\n\tby b; date\r\nRECEIVED : x\r\nReceived-SPF: pass\r\n\
                  X-Received: y\r\nSubject: s\r\n\r\nReceived: in the body\r\n";
        assert_eq!(received_count(m), 2);
        assert_eq!(
            received_count(b"Received: x\nReceived: y\n\nReceived: z\n"),
            2
        );
        assert_eq!(received_count(b""), 0);
        assert_eq!(received_count(b"Received:"), 1);
    }

    #[test]
    fn counts_many() {
        let m = "Received: x\r\n".repeat(10_000);
        assert_eq!(received_count(m.as_bytes()), 10_000);
    }

    #[test]
    fn the_scan_is_bounded() {
        let mut m = vec![b'X'; MAX_SCAN];
        m.extend_from_slice(b"\r\nReceived: x\r\n");
        assert_eq!(received_count(&m), 0);
    }
}
