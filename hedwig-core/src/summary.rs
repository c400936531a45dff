//! What the delivery ledger records of a message's header block: the `Message-ID:`, the
//! decoded `Subject:`, and the address of the client that handed the message to mailman (from
//! the top `Received:` field, the one mailman writes).
//!
//! Only the header block is read, and at most [`MAX_HEADER`] bytes of it: a hostile message
//! cannot make this expensive. Everything found is made safe for a log line or a terminal
//! (control characters become spaces) and bounded ([`MAX_SUBJECT`] characters of subject,
//! [`MAX_MESSAGE_ID`] bytes of Message-ID). A field that is missing or unreadable is `None`;
//! nothing here fails.
//!
//! mailman's field (`hedwig_message::trace`) looks like
//!
//! ```text
//! Received: from web1.example.com ([192.0.2.7])
//!         by relay.example.net (mailman) with ESMTPS id 0190AB12CD34EF56;
//!         Mon, 23 Nov 2026 04:15:31 +0000
//! ```
//!
//! (`[IPv6:2001:db8::1]` for IPv6). mailman makes the HELO name safe (no parentheses or
//! brackets in it), so the first `([...])` is the client's address; a top field without
//! `(mailman)` is some other hop's and gives no client.
//!
//! Not here: the ledger events (the `hedwig-queue` crate's `event` module).

use std::net::IpAddr;
use std::sync::LazyLock;

use mail_parser::{HeaderName, MessageParser};

/// A parser that decodes `Message-ID:` and `Subject:` as the default one does and skips the
/// values of every other field.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_id(HeaderName::MessageId)
        .header_text(HeaderName::Subject)
        .default_header_ignore()
});

/// At most this many bytes of a message are read for its header block.
pub const MAX_HEADER: usize = 64 * 1024;
/// Longest subject kept, in characters.
pub const MAX_SUBJECT: usize = 200;
/// Longest Message-ID kept, in bytes (longer ones are dropped, not cut: a cut id matches
/// nothing).
pub const MAX_MESSAGE_ID: usize = 998;

/// What the ledger keeps of a message's header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The `Message-ID:` field without its angle brackets.
    pub message_id: Option<String>,
    /// The `Subject:` field, decoded (RFC 2047), one line, cut to [`MAX_SUBJECT`] characters.
    pub subject: Option<String>,
    /// The client address in mailman's `Received:` field (the top one).
    pub edge_client: Option<IpAddr>,
}

impl Summary {
    /// Reads the header block of `message` (raw bytes, header block first).
    pub fn of(message: &[u8]) -> Summary {
        let block = header_block(message);
        let edge_client = field(block, b"received").and_then(|f| mailman_client(&f));
        // The parser splits the whole block into fields as mail-parser always does, but decodes
        // only the two wanted: the values of the others are skipped, not decoded.
        let (message_id, subject) = id_and_subject(PARSER.parse_headers(block).as_ref());
        Summary {
            message_id,
            subject,
            edge_client,
        }
    }
}

/// The Message-ID and Subject of a parsed header block, as the ledger keeps them: on one line,
/// trimmed, the id only when not empty and at most [`MAX_MESSAGE_ID`] bytes, the subject cut
/// at [`MAX_SUBJECT`].
fn id_and_subject(parsed: Option<&mail_parser::Message<'_>>) -> (Option<String>, Option<String>) {
    let message_id = parsed
        .and_then(|m| m.message_id())
        .map(one_line)
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty() && id.len() <= MAX_MESSAGE_ID);
    let subject = parsed
        .and_then(|m| m.subject())
        .map(|s| cut(one_line(s).trim(), MAX_SUBJECT));
    (message_id, subject)
}

/// The header block: up to and including the line before the first empty line, within the
/// first [`MAX_HEADER`] bytes (cut after the last whole line when it is longer).
pub fn header_block(message: &[u8]) -> &[u8] {
    let scan = &message[..message.len().min(MAX_HEADER)];
    let mut start = 0;
    while start < scan.len() {
        let Some(nl) = scan[start..].iter().position(|&b| b == b'\n') else {
            // An unfinished last line: whole if the message ends here, else cut off.
            return if scan.len() == message.len() {
                scan
            } else {
                &scan[..start]
            };
        };
        let line = &scan[start..start + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return &scan[..start];
        }
        start += nl + 1;
    }
    scan
}

/// The value of the first field named `name` (any case) in the header `block`, unfolded
/// (lossy UTF-8). A plain byte scan, for the one or two fields intake reads without parsing
/// the whole header.
pub fn field(block: &[u8], name: &[u8]) -> Option<String> {
    let mut value: Option<Vec<u8>> = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = value.as_mut() {
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                v.push(b' ');
                v.extend_from_slice(line);
                continue;
            }
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].trim_ascii_end().eq_ignore_ascii_case(name) {
            value = Some(line[colon + 1..].to_vec());
        }
    }
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The address in `from HELO ([ADDR])` of a field mailman wrote.
fn mailman_client(value: &str) -> Option<IpAddr> {
    if !value.contains("(mailman)") {
        return None;
    }
    let open = value.find("([")?;
    let rest = &value[open + 2..];
    let close = rest.find("])")?;
    let literal = &rest[..close];
    let literal = literal
        .strip_prefix("IPv6:")
        .or_else(|| literal.strip_prefix("ipv6:"))
        .unwrap_or(literal);
    literal.parse().ok()
}

/// Control characters (line breaks, tabs, escapes) as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mailman's field exactly as `mailman/src/smtp/tests.rs` pins it.
    const MAILMAN: &str =
        "Received: from we_b_ ([172.17.0.5])\r\n\tby mx.test (mailman) with ESMTP id ID1\r\n\
\tfor <x@y.test>;\r\n\tMon, 23 Nov 2026 04:00:00 +0000\r\n";

    fn message(headers: &str) -> Vec<u8> {
        format!("{headers}\r\nbody\r\nReceived: from x ([10.9.9.9]) by y (mailman)\r\n")
            .into_bytes()
    }

    #[test]
    fn mailmans_exact_field() {
        let m = message(&format!(
            "{MAILMAN}From: a@b.test\r\nSubject: =?utf-8?q?caf=C3=A9?= order\r\nMessage-ID: <abc.1@b.test>\r\n"
        ));
        let s = Summary::of(&m);
        assert_eq!(s.edge_client, Some("172.17.0.5".parse().unwrap()));
        assert_eq!(s.message_id.as_deref(), Some("abc.1@b.test"));
        assert_eq!(s.subject.as_deref(), Some("café order"));

        let v6 = "Received: from h ([IPv6:2001:db8::1])\r\n\tby mx.test (mailman) with SMTP id ID2;\r\n\tMon, 23 Nov 2026 04:00:00 +0000\r\n";
        assert_eq!(
            Summary::of(&message(v6)).edge_client,
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn only_the_top_field_and_only_mailmans() {
        // The top field is another hop's: no client, even though mailman's is below it.
        let m = message(&format!(
            "Received: from a ([192.0.2.1]) by other.test (postfix);\r\n Mon, 1 Jan 2026 00:00:00 +0000\r\n{MAILMAN}"
        ));
        assert_eq!(Summary::of(&m).edge_client, None);
        // None at all, or one in the body only.
        assert_eq!(
            Summary::of(&message("Subject: x\r\n")),
            Summary {
                subject: Some("x".into()),
                ..Summary::default()
            }
        );
        // Not an address.
        let bad = "Received: from a ([not.an.ip]) by b (mailman) with ESMTP id X; date\r\n";
        assert_eq!(Summary::of(&message(bad)).edge_client, None);
        let unclosed = "Received: from a ([192.0.2.1 by b (mailman)\r\n";
        assert_eq!(Summary::of(&message(unclosed)).edge_client, None);
    }

    #[test]
    fn hostile_input() {
        assert_eq!(Summary::of(b""), Summary::default());
        assert_eq!(
            Summary::of(b"\r\n\r\nSubject: body\r\n"),
            Summary::default()
        );
        // Invalid UTF-8 everywhere.
        let mut m =
            b"Received: from \xff\xfe ([192.0.2.9])\r\n\tby \xc3 (mailman) with ESMTP id I; d\r\n"
                .to_vec();
        m.extend_from_slice(b"Subject: \xff\xfe\x80 bad\r\nMessage-ID: <\xff@x>\r\n\r\nbody");
        let s = Summary::of(&m);
        assert_eq!(s.edge_client, Some("192.0.2.9".parse().unwrap()));
        assert!(s.subject.is_some_and(|s| s.contains("bad")));
        // Control characters and folding never leave a line break; long subjects are cut.
        let long = format!(
            "Subject: a\x1b[31mb\r\n {}\r\nMessage-ID: <{}@x>\r\n",
            "é".repeat(5000),
            "i".repeat(2000)
        );
        let s = Summary::of(&message(&long));
        let subject = s.subject.unwrap();
        assert_eq!(subject.chars().count(), MAX_SUBJECT);
        assert!(!subject.chars().any(char::is_control), "{subject:?}");
        assert_eq!(s.message_id, None, "over-long ids are dropped");
        // A header block of megabytes: only the first MAX_HEADER bytes are read, and the
        // Subject beyond them is not seen.
        let mut huge = format!("{MAILMAN}X-Pad: ").into_bytes();
        huge.extend(std::iter::repeat_n(b'x', 3 * MAX_HEADER));
        huge.extend_from_slice(b"\r\nSubject: late\r\n\r\nbody");
        let s = Summary::of(&huge);
        assert_eq!(s.subject, None);
        assert_eq!(s.edge_client, Some("172.17.0.5".parse().unwrap()));
        // Many Received fields (a loop): still bounded, the top one counts.
        let many = MAILMAN.repeat(20_000);
        assert_eq!(
            Summary::of(many.as_bytes()).edge_client,
            Some("172.17.0.5".parse().unwrap())
        );
    }

    /// What `Summary::of` found before it parsed only the two fields: the whole block
    /// through mail-parser.
    fn parsed_whole(message: &[u8]) -> (Option<String>, Option<String>) {
        id_and_subject(
            mail_parser::MessageParser::new()
                .parse_headers(header_block(message))
                .as_ref(),
        )
    }

    #[test]
    fn skipping_the_other_fields_gives_what_parsing_them_gave() {
        let blocks: &[&[u8]] = &[
            b"Subject: plain\r\nMessage-ID: <a@b>\r\n\r\nbody",
            b"From: x@y\r\nSubject: =?UTF-8?B?w6lsw6g=?= and =?ISO-8859-1?Q?caf=E9?=\r\n\r\n",
            b"Subject: folded\r\n  over\r\n\tthree lines\r\nTo: z@w\r\n\r\n",
            b"Subject: first\r\nSubject: second\r\nMessage-ID: <1@x>\r\nMessage-Id: <2@x>\r\n\r\n",
            b"subject: lower\r\nMESSAGE-ID:<nospace@x>\r\n\r\n",
            b"Subject : space before colon\r\nMessage-ID :  <sp@x>  \r\n\r\n",
            b"Subject: bare\nMessage-ID: <lf@x>\n\nbody",
            b"X-A: 1\r\n folded X-A\r\nSubject: after a folded field\r\n\r\n",
            b"garbage line without colon\r\nSubject: after garbage\r\n\r\n",
            b" leading continuation\r\nSubject: s\r\n\r\n",
            b"Subject:\r\nMessage-ID:\r\n\r\n",
            b"Subject: no end of line",
            b"Message-ID: <a@b> (comment)\r\nSubject: =?utf-8?q?broken?=?=\r\n\r\n",
            b"Subject: \xff\xfe\x80 bad\r\nMessage-ID: <\xff@x>\r\n\r\n",
            b"Subject-Extra: not it\r\nX-Subject: nor this\r\nSubject: this\r\n\r\n",
            b"Message-ID: <a@b>\r\n <folded-continuation@c>\r\n\r\n",
            b"Sub ject: inner space\r\n\r\n",
            b":Subject: leading colon\r\n\r\n",
            b"\rSubject: after a lone CR\r\n\r\n",
            b" Subject: leading blank\r\n\r\n",
            b"nocolon\r\n Subject: blank after a colon-less line\r\n\r\n",
            b"From: \"a, b\" <x@y>, (c) z@w\r\nTo: undisclosed-recipients:;\r\nDate: bad\r\nSubject: s\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\nReceived: from x by y; bad\r\nMessage-ID: <m@x>\r\n\r\n",
            b"Subject: cr only\rMessage-ID: <cr@x>\r\r",
        ];
        for block in blocks {
            let s = Summary::of(block);
            assert_eq!(
                (s.message_id, s.subject),
                parsed_whole(block),
                "{}",
                String::from_utf8_lossy(block)
            );
        }
    }

    #[test]
    fn the_header_block_ends_at_the_empty_line() {
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n\r\nbody"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_block(b"A: 1\n\nbody"), b"A: 1\n");
        assert_eq!(header_block(b"A: 1"), b"A: 1");
        let mut long = b"A: 1\r\nB: ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_HEADER));
        assert_eq!(header_block(&long), b"A: 1\r\n");
    }
}
