//! Header fix-ups and header refusals at the edge (issue 19), before a message is spooled.
//!
//! mailman is the submission server of every container on its host, and RFC 6409 §8 lets a
//! submission server complete a message, as Postfix does for its own clients
//! (`always_add_missing_headers`). [`apply`] looks at the header block only:
//!
//! - **Refusals** ([`Refusal`], switch `refuse_bad_headers`): what the big receivers refuse
//!   anyway is refused here at DATA time, so the application learns it at once: more than one
//!   `From:` field, a `From:` without a valid address, a header line over 998 octets
//!   (RFC 5322 §2.1.1) and raw 8-bit bytes in the header of a message sent without
//!   `SMTPUTF8` (RFC 6532 needs it; RFC 2047 encoded words are the 7-bit form).
//! - **Fix-ups** ([`AddMissingHeaders`], each switchable): `Date:` (mailman's clock),
//!   `Message-ID:` (`<mailman id@fqdn>`), `From:` (the envelope sender), and
//!   `To: undisclosed-recipients:;` when there is no `To:` or `Cc:`; `Bcc:` fields are
//!   removed. A message without `From:` from the null sender has nothing to copy from: it is
//!   refused (`554 5.6.0`) while the `from` fix-up is on.
//!
//! Added fields go at the end of the header block, in that order. The rest of the message is
//! kept byte for byte: nothing is re-encoded or re-folded, and a message that needs nothing is
//! returned as it came ([`Cow::Borrowed`]). A message with no header field at all (its first
//! line is text) gets an empty line after the added fields, so its text stays the body.
//!
//! Lines are split the way `hedwig_core::from` (the post office's view) splits them: CRLF, a
//! bare LF and a bare CR each end a line, so a bare CR cannot hide a field from one reader
//! and show it to another. The header block ends at the first empty line or at the first line
//! that is neither a field (a line with a colon) nor a continuation.
//!
//! Not here: the I/O, the log line and the reply (see [`crate::handoff`]); the `Received:`
//! field (`crate::smtp::Message::received_header`); the loop limit (`crate::smtp::hops`).

use std::borrow::Cow;

use hedwig_core::address::Mailbox;
use hedwig_core::from::FromHeader;
use serde::{Deserialize, Serialize};

/// Longest header line RFC 5322 §2.1.1 allows, without its CRLF.
pub const MAX_HEADER_LINE: usize = 998;

/// Which missing header fields mailman adds (and whether it removes `Bcc:`); all on by
/// default. Config key `add_missing_headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddMissingHeaders {
    /// Add `Date:` (mailman's clock, UTC) when there is none.
    pub date: bool,
    /// Add `Message-ID: <id@fqdn>` (mailman's message id, this host's fqdn) when there is none.
    pub message_id: bool,
    /// Add `From:` with the envelope sender when there is none; refuse a message from the
    /// null sender that has none.
    pub from: bool,
    /// Add `To: undisclosed-recipients:;` when there is no `To:` or `Cc:` (nor a kept `Bcc:`).
    pub to: bool,
    /// Remove every `Bcc:` field (the recipients are in the envelope; the field would show
    /// them to everyone).
    pub strip_bcc: bool,
}

impl Default for AddMissingHeaders {
    fn default() -> Self {
        AddMissingHeaders {
            date: true,
            message_id: true,
            from: true,
            to: true,
            strip_bcc: true,
        }
    }
}

impl AddMissingHeaders {
    /// Every fix-up off.
    pub const NONE: AddMissingHeaders = AddMissingHeaders {
        date: false,
        message_id: false,
        from: false,
        to: false,
        strip_bcc: false,
    };

    /// The switches that are on, comma-separated (`none` when all are off), for
    /// `check-config`.
    pub fn summary(&self) -> String {
        let on: Vec<&str> = [
            (self.date, "date"),
            (self.message_id, "message_id"),
            (self.from, "from"),
            (self.to, "to"),
            (self.strip_bcc, "strip_bcc"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(", ")
        }
    }
}

/// What [`apply`] needs besides the message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The fix-ups that are on.
    pub add: AddMissingHeaders,
    /// Whether the refusals are on (`refuse_bad_headers`).
    pub refuse: bool,
    /// With `refuse`: whether raw 8-bit header bytes without `SMTPUTF8` are refused too
    /// (`refuse_8bit_headers`).
    pub refuse_8bit: bool,
    /// The envelope sender (empty: the null sender).
    pub mail_from: &'a str,
    /// `SMTPUTF8` was given on MAIL FROM.
    pub smtputf8: bool,
    /// Unix seconds, for `Date:`.
    pub now: u64,
    /// mailman's id of the message, for `Message-ID:`.
    pub id: &'a str,
    /// This host's fqdn, for `Message-ID:`.
    pub fqdn: &'a str,
}

/// Why a message is refused at DATA time. Each is answered `554 5.6.0` (RFC 3463: a media
/// error, the content is malformed) with [`Refusal::reply_text`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More than one `From:` field (RFC 5322 §3.6 allows exactly one).
    #[error("{0} From: header fields; RFC 5322 section 3.6 allows exactly one")]
    ManyFrom(usize),
    /// A `From:` field without a valid address.
    #[error("From: header field without a valid address ({0}); RFC 5322 section 3.6.2 needs one")]
    FromWithoutAddress(String),
    /// No `From:` and the null sender, so none can be added.
    #[error(
        "no From: header field, and the null sender gives no address to add; RFC 5322 section 3.6 needs one"
    )]
    NoFromNullSender,
    /// A header line longer than 998 octets (RFC 5322 §2.1.1).
    #[error("header line {line} is {octets} octets long; RFC 5322 section 2.1.1 allows 998")]
    LongLine {
        /// 1-based line number in the header block.
        line: usize,
        /// Its length without the line end.
        octets: usize,
    },
    /// Raw 8-bit bytes in the header without `SMTPUTF8`.
    #[error(
        "raw 8-bit byte in the {0} header field of a message sent without SMTPUTF8; use RFC 2047 encoded words or MAIL FROM ... SMTPUTF8"
    )]
    EightBit(String),
}

impl Refusal {
    /// The reply text after `554 `: the enhanced code and the reason.
    pub fn reply_text(&self) -> String {
        format!("5.6.0 message refused: {self}")
    }
}

/// The result of [`apply`]: the message to spool and what was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// The message, borrowed when nothing changed.
    pub message: Cow<'a, [u8]>,
    /// What was added or removed, in order: `date`, `message-id`, `from`, `to`, `bcc` (for
    /// removed `Bcc:` fields); empty when nothing changed.
    pub fixed: Vec<&'static str>,
}

/// One header field: its name and where it lies (its first line up to the end of its last
/// continuation line, line end included).
#[derive(Debug)]
struct Field {
    name: Vec<u8>,
    start: usize,
    end: usize,
}

/// The header block of a message.
#[derive(Debug)]
struct Header {
    fields: Vec<Field>,
    /// Where the header block ends: the start of the empty line, of the first line that is
    /// not part of the header, or the message's length.
    end: usize,
    /// The header block ended at an empty line or at the end of the message (not at a line
    /// of text).
    clean_end: bool,
    /// The longest header line: (1-based line number, octets without line end).
    longest: (usize, usize),
}

/// Splits the header block off `message`.
fn header(message: &[u8]) -> Header {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    let mut number = 0;
    let mut longest = (0, 0);
    while pos < message.len() {
        let rest = &message[pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let ending = match rest.get(len..len + 2) {
            Some(b"\r\n") => 2,
            _ if len < rest.len() => 1,
            _ => 0,
        };
        let line = &rest[..len];
        if line.is_empty() {
            return Header {
                fields,
                end: pos,
                clean_end: true,
                longest,
            };
        }
        let next = pos + len + ending;
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation before any field belongs to none; it is skipped, as
            // `hedwig_core::from` skips it.
            if let Some(field) = fields.last_mut() {
                field.end = next;
            }
        } else {
            // Any line with a colon is a field, as `hedwig_core::from` (the post office) reads
            // it: the two must agree on which fields a message has.
            match line.iter().position(|&b| b == b':') {
                Some(colon) => fields.push(Field {
                    name: trim_end_wsp(&line[..colon]).to_vec(),
                    start: pos,
                    end: next,
                }),
                None => break,
            }
        }
        number += 1;
        if len > longest.1 {
            longest = (number, len);
        }
        pos = next;
    }
    Header {
        fields,
        end: pos,
        clean_end: pos >= message.len(),
        longest,
    }
}

fn trim_end_wsp(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &name[..end]
}

impl Header {
    fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Checks `message` and adds what is missing, as `input` says. Pure: the clock, the id and
/// the host name come in through `input`.
pub fn apply<'a>(message: &'a [u8], input: &Input<'_>) -> Result<Outcome<'a>, Refusal> {
    let header = header(message);
    if input.refuse {
        if header.longest.1 > MAX_HEADER_LINE {
            return Err(Refusal::LongLine {
                line: header.longest.0,
                octets: header.longest.1,
            });
        }
        if input.refuse_8bit && !input.smtputf8 {
            if let Some(field) = header
                .fields
                .iter()
                .find(|f| message[f.start..f.end].iter().any(|&b| b >= 0x80))
            {
                return Err(Refusal::EightBit(
                    String::from_utf8_lossy(&field.name).into_owned(),
                ));
            }
        }
        let from = FromHeader::parse(message);
        if from.fields > 1 {
            return Err(Refusal::ManyFrom(from.fields));
        }
        if from.fields == 1 {
            if from.addresses.is_empty() {
                return Err(Refusal::FromWithoutAddress("none".into()));
            }
            if let Some(bad) = from
                .addresses
                .iter()
                .find(|a| Mailbox::parse(a.as_str()).is_err())
            {
                return Err(Refusal::FromWithoutAddress(format!("{bad:?}")));
            }
        }
    }
    let add = input.add;
    let mut fixed = Vec::new();
    let mut added = String::new();
    if add.date && !header.has("date") {
        added.push_str(&format!(
            "Date: {}\r\n",
            hedwig_message::rfc5322_date(input.now)
        ));
        fixed.push("date");
    }
    if add.message_id && !header.has("message-id") {
        added.push_str(&format!("Message-ID: <{}@{}>\r\n", input.id, input.fqdn));
        fixed.push("message-id");
    }
    if add.from && !header.has("from") {
        if input.mail_from.is_empty() {
            return Err(Refusal::NoFromNullSender);
        }
        added.push_str(&format!("From: {}\r\n", input.mail_from));
        fixed.push("from");
    }
    let has_bcc = header.has("bcc");
    let bcc_kept = has_bcc && !add.strip_bcc;
    if add.to && !header.has("to") && !header.has("cc") && !bcc_kept {
        added.push_str("To: undisclosed-recipients:;\r\n");
        fixed.push("to");
    }
    let strip = add.strip_bcc && has_bcc;
    if added.is_empty() && !strip {
        return Ok(Outcome {
            message: Cow::Borrowed(message),
            fixed,
        });
    }
    let mut out = Vec::with_capacity(message.len() + added.len() + 2);
    let mut pos = 0;
    if strip {
        for field in header
            .fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(b"bcc"))
        {
            out.extend_from_slice(&message[pos..field.start]);
            pos = field.end;
        }
        fixed.push("bcc");
    }
    out.extend_from_slice(&message[pos..header.end]);
    if !added.is_empty() {
        if !out.is_empty() && !out.ends_with(b"\n") && !out.ends_with(b"\r") {
            // A header-only message whose last line has no line end.
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(added.as_bytes());
        if !header.clean_end {
            // The header block ended at a line of text: that text is the body, say so.
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(&message[header.end..]);
    Ok(Outcome {
        message: Cow::Owned(out),
        fixed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190ABCDEF01234567890ABC";
    const NOW: u64 = 1_795_407_331; // Mon, 23 Nov 2026 04:15:31 +0000
    const DATE: &str = "Date: Mon, 23 Nov 2026 04:15:31 +0000\r\n";
    const MID: &str = "Message-ID: <0190ABCDEF01234567890ABC@web1.example.com>\r\n";
    const FROM: &str = "From: app@shop.example.com\r\n";
    const TO: &str = "To: undisclosed-recipients:;\r\n";

    fn input(add: AddMissingHeaders) -> Input<'static> {
        Input {
            add,
            refuse: true,
            refuse_8bit: true,
            mail_from: "app@shop.example.com",
            smtputf8: false,
            now: NOW,
            id: ID,
            fqdn: "web1.example.com",
        }
    }

    fn run(message: &[u8], add: AddMissingHeaders) -> (Vec<u8>, Vec<&'static str>) {
        let out = apply(message, &input(add)).expect("accepted");
        (out.message.into_owned(), out.fixed)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn subject_only_gets_everything() {
        let (out, fixed) = run(b"Subject: hi\r\n\r\nbody\r\n", AddMissingHeaders::default());
        assert_eq!(
            text(&out),
            format!("Subject: hi\r\n{DATE}{MID}{FROM}{TO}\r\nbody\r\n")
        );
        assert_eq!(fixed, ["date", "message-id", "from", "to"]);
    }

    #[test]
    fn every_combination_of_switches_and_present_fields() {
        let fields = [
            ("date", "Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n"),
            ("message-id", "Message-ID: <own@app.example>\r\n"),
            ("from", "From: Shop <shop@shop.example.com>\r\n"),
            ("to", "To: a@rcpt.example\r\n"),
        ];
        let added = [DATE, MID, FROM, TO];
        for present in 0..16u32 {
            for switches in 0..32u32 {
                let add = AddMissingHeaders {
                    date: switches & 1 != 0,
                    message_id: switches & 2 != 0,
                    from: switches & 4 != 0,
                    to: switches & 8 != 0,
                    strip_bcc: switches & 16 != 0,
                };
                let mut message = String::from("Subject: s\r\n");
                for (i, (_, field)) in fields.iter().enumerate() {
                    if present & (1 << i) != 0 {
                        message.push_str(field);
                    }
                }
                let with_bcc = format!("{message}Bcc: hidden@rcpt.example\r\n");
                for (source, bcc) in [(&message, false), (&with_bcc, true)] {
                    let full = format!("{source}\r\nbody\r\n");
                    let (out, fixed) = run(full.as_bytes(), add);
                    let on = [add.date, add.message_id, add.from, add.to];
                    let mut expect = if bcc && add.strip_bcc {
                        message.clone()
                    } else {
                        source.clone()
                    };
                    let mut names = Vec::new();
                    for i in 0..4 {
                        let missing = present & (1 << i) == 0;
                        // A kept Bcc: is a destination field: no To: is added.
                        let blocked = i == 3 && bcc && !add.strip_bcc;
                        if on[i] && missing && !blocked {
                            expect.push_str(added[i]);
                            names.push(fields[i].0);
                        }
                    }
                    if bcc && add.strip_bcc {
                        names.push("bcc");
                    }
                    expect.push_str("\r\nbody\r\n");
                    let ctx = format!("present {present:04b} switches {switches:05b} bcc {bcc}");
                    assert_eq!(text(&out), expect, "{ctx}");
                    assert_eq!(fixed, names, "{ctx}");
                    // Idempotent: a second pass changes nothing.
                    let again = apply(&out, &input(add)).expect("accepted");
                    assert!(matches!(again.message, Cow::Borrowed(_)), "{ctx}");
                    assert!(again.fixed.is_empty(), "{ctx}");
                }
            }
        }
    }

    #[test]
    fn a_complete_message_is_unchanged_byte_for_byte() {
        let m: &[u8] = b"From: \"Shop\" <shop@shop.example.com>\r\nTo: a@rcpt.example,\r\n\t b@rcpt.example\r\n\
Date: Tue, 1 Dec 2026 10:00:00 +0100\r\nMessage-ID: <x@y>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\
X-Odd:no space\r\n\r\n.leading dot\r\nCaf\xe9\r\n\r\n\r\nBcc: in the body stays\r\n";
        let out = apply(m, &input(AddMissingHeaders::default())).unwrap();
        assert!(matches!(out.message, Cow::Borrowed(_)));
        assert_eq!(&*out.message, m);
        assert!(out.fixed.is_empty());
    }

    #[test]
    fn bcc_with_continuations_is_removed_and_case_does_not_matter() {
        let m = b"To: a@x.example\r\nBCC: b@x.example,\r\n c@x.example\r\nSubject: s\r\nbcc : d@x.example\r\n\r\nb\r\n";
        let all = AddMissingHeaders::default();
        let (out, fixed) = run(m, all);
        assert_eq!(
            text(&out),
            format!("To: a@x.example\r\nSubject: s\r\n{DATE}{MID}{FROM}\r\nb\r\n")
        );
        assert_eq!(fixed, ["date", "message-id", "from", "bcc"]);
        // Only Bcc: the To: is added once it is gone.
        let (out, _) = run(b"Bcc: b@x.example\r\n\r\n", all);
        assert_eq!(text(&out), format!("{DATE}{MID}{FROM}{TO}\r\n"));
    }

    #[test]
    fn shapes_of_the_header_block() {
        let all = AddMissingHeaders::default();
        // A continuation line before any field is skipped, as the post office skips it.
        let (out, fixed) = run(b" x\r\nFrom: a@b.example\r\n\r\n", all);
        assert!(!fixed.contains(&"from"), "{}", text(&out));
        // No header at all: the text stays the body.
        let (out, _) = run(b"just text\r\n", all);
        assert_eq!(
            text(&out),
            format!("{DATE}{MID}{FROM}{TO}\r\njust text\r\n")
        );
        // Header only, no empty line.
        let (out, _) = run(b"Subject: s\r\n", all);
        assert_eq!(text(&out), format!("Subject: s\r\n{DATE}{MID}{FROM}{TO}"));
        // Header only, last line without line end.
        let (out, _) = run(b"Subject: s", all);
        assert_eq!(text(&out), format!("Subject: s\r\n{DATE}{MID}{FROM}{TO}"));
        // Empty message.
        let (out, _) = run(b"", all);
        assert_eq!(text(&out), format!("{DATE}{MID}{FROM}{TO}"));
        // Empty header, then a body.
        let (out, _) = run(b"\r\nbody\r\n", all);
        assert_eq!(text(&out), format!("{DATE}{MID}{FROM}{TO}\r\nbody\r\n"));
        // A header that ends at a line of text: an empty line is put before the text.
        let (out, _) = run(b"Subject: s\r\ntext line\r\n", all);
        assert_eq!(
            text(&out),
            format!("Subject: s\r\n{DATE}{MID}{FROM}{TO}\r\ntext line\r\n")
        );
        // Fields in the body do not count.
        let (out, _) = run(b"Subject: s\r\n\r\nDate: x\r\nFrom: y@z.example\r\n", all);
        assert!(text(&out).starts_with(&format!("Subject: s\r\n{DATE}")));
        // A bare CR ends a line, as the post office reads it: the From: behind it counts.
        let (out, fixed) = run(b"Subject: s\rFrom: a@b.example\r\n\r\n", all);
        assert!(!fixed.contains(&"from"), "{}", text(&out));
    }

    #[test]
    fn random_messages_never_panic_and_fixing_is_idempotent() {
        use rand::{Rng, SeedableRng};
        const PARTS: &[&[u8]] = &[
            b"From:",
            b"from :",
            b"To:",
            b"Cc:",
            b"Bcc:",
            b"Date:",
            b"Message-ID:",
            b"Subject:",
            b" a@b.example",
            b"<c@d.example>",
            b"root",
            b"x",
            b":",
            b" ",
            b"\t",
            b"\r\n",
            b"\r\n",
            b"\r\n\r\n",
            b"\n",
            b"\r",
            b"\xe9",
            b"\x00",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..5000 {
            let mut m = Vec::new();
            for _ in 0..rng.gen_range(0..24) {
                m.extend_from_slice(PARTS[rng.gen_range(0..PARTS.len())]);
            }
            let mut i = input(AddMissingHeaders::default());
            i.refuse = rng.gen_bool(0.5);
            i.smtputf8 = rng.gen_bool(0.5);
            match apply(&m, &i) {
                Ok(out) => {
                    accepted += 1;
                    let again = apply(&out.message, &i).unwrap_or_else(|e| {
                        panic!("{:?} -> {:?}: {e}", text(&m), text(&out.message))
                    });
                    assert!(
                        again.fixed.is_empty(),
                        "{:?} -> {:?}",
                        text(&m),
                        again.fixed
                    );
                    assert_eq!(&*again.message, &*out.message);
                    // The post office sees a From: after the fix-ups; exactly one unless the
                    // refusals are off.
                    let froms = FromHeader::parse(&out.message).fields;
                    assert!(
                        froms == 1 || (!i.refuse && froms > 1),
                        "{froms} From: {:?} -> {:?}",
                        text(&m),
                        text(&out.message)
                    );
                }
                Err(_) => refused += 1,
            }
        }
        assert!(accepted > 1000 && refused > 200, "{accepted} / {refused}");
    }

    #[test]
    fn null_sender_without_from_is_refused_only_while_from_is_on() {
        let mut i = input(AddMissingHeaders::default());
        i.mail_from = "";
        assert_eq!(
            apply(b"Subject: s\r\n\r\n", &i).unwrap_err(),
            Refusal::NoFromNullSender
        );
        assert!(apply(b"From: a@b.example\r\n\r\n", &i).is_ok());
        i.add.from = false;
        let out = apply(b"Subject: s\r\n\r\n", &i).unwrap();
        assert!(!text(&out.message).contains("From:"));
    }

    #[test]
    fn refusals() {
        let all = input(AddMissingHeaders::default());
        let cases: Vec<(Vec<u8>, Refusal)> = vec![
            (
                b"From: a@b.example\r\nFrom: c@d.example\r\n\r\n".to_vec(),
                Refusal::ManyFrom(2),
            ),
            (
                b"from: a@b.example\r\nTo: x@y.example\r\nFROM : c@d.example\r\nFrom: e@f.example\r\n\r\n"
                    .to_vec(),
                Refusal::ManyFrom(3),
            ),
            (
                b"From: \r\n\r\n".to_vec(),
                Refusal::FromWithoutAddress("none".into()),
            ),
            (
                b"From: root\r\n\r\n".to_vec(),
                Refusal::FromWithoutAddress("\"root\"".into()),
            ),
            (
                format!("Subject: {}\r\n\r\n", "x".repeat(990)).into_bytes(),
                Refusal::LongLine {
                    line: 1,
                    octets: 999,
                },
            ),
            (
                format!("To: a@b.example\r\n\t{}\r\n\r\n", "x".repeat(998)).into_bytes(),
                Refusal::LongLine {
                    line: 2,
                    octets: 999,
                },
            ),
            (
                b"From: a@b.example\r\nSubject: Caf\xc3\xa9\r\n\r\n".to_vec(),
                Refusal::EightBit("Subject".into()),
            ),
        ];
        for (message, why) in cases {
            assert_eq!(
                apply(&message, &all).unwrap_err(),
                why,
                "{}",
                text(&message)
            );
            let mut off = all;
            off.refuse = false;
            assert!(apply(&message, &off).is_ok(), "{}", text(&message));
        }
        // 998 octets is fine; 8-bit in the body is fine; 8-bit headers with SMTPUTF8 are fine.
        let ok = format!("Subject: {}\r\n\r\n", "x".repeat(989));
        assert!(apply(ok.as_bytes(), &all).is_ok());
        assert!(apply(b"Subject: s\r\n\r\nCaf\xc3\xa9\r\n", &all).is_ok());
        let mut utf8 = all;
        utf8.smtputf8 = true;
        assert!(apply(b"Subject: Caf\xc3\xa9\r\n\r\n", &utf8).is_ok());
        // `refuse_8bit_headers: false` lets only the 8-bit header through.
        let mut lenient = all;
        lenient.refuse_8bit = false;
        assert!(apply(
            b"From: a@b.example\r\nSubject: Caf\xc3\xa9\r\n\r\n",
            &lenient
        )
        .is_ok());
        assert_eq!(
            apply(b"From: a@b.example\r\nFrom: c@d.example\r\n\r\n", &lenient).unwrap_err(),
            Refusal::ManyFrom(2)
        );
        // A long body line is not the header's business.
        let body = format!("Subject: s\r\n\r\n{}\r\n", "y".repeat(5000));
        assert!(apply(body.as_bytes(), &all).is_ok());
        assert!(Refusal::ManyFrom(2)
            .reply_text()
            .starts_with("5.6.0 message refused: 2 From: header fields"));
    }
}
