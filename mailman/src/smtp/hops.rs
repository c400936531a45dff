//! Counting `Received:` trace headers to stop mail loops (issue 11 F2), like Postfix's
//! `hopcount_limit`.
//!
//! Only the header section is read, line by line, up to the first empty line; the scan stops
//! as soon as the count is over the limit, so its cost is bounded by the header section (and
//! by the message size limit before it).

/// The `Received:` header fields in the header section of `message` (CRLF or LF lines),
/// counting at most up to `stop_above + 1`.
pub fn count_received(message: &[u8], stop_above: usize) -> usize {
    let mut count = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if is_received(line) {
            count += 1;
            if count > stop_above {
                break;
            }
        }
    }
    count
}

/// `Received` (any case), optional white space (RFC 5322 §4.5.3 obsolete syntax), `:`.
fn is_received(line: &[u8]) -> bool {
    const NAME: &[u8] = b"received";
    line.len() > NAME.len()
        && line[..NAME.len()].eq_ignore_ascii_case(NAME)
        && line[NAME.len()..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_header_fields_only() {
        let m = b"Received: from a\r\n\tby b; date\r\nRECEIVED : x\r\nreceived:y\r\n\
X-Received: no\r\nReceived-SPF: no\r\nSubject: Received: no\r\n\r\nReceived: in the body\r\n";
        assert_eq!(count_received(m, 100), 3);
        assert_eq!(
            count_received(b"Received: x\nReceived: y\n\nReceived: z\n", 100),
            2
        );
        assert_eq!(count_received(b"", 100), 0);
        assert_eq!(count_received(b"\r\nReceived: x\r\n", 100), 0);
    }

    #[test]
    fn stops_over_the_limit() {
        let m = "Received: x\r\n".repeat(10_000);
        assert_eq!(count_received(m.as_bytes(), 50), 51);
        assert_eq!(count_received(m.as_bytes(), 20_000), 10_000);
    }
}
