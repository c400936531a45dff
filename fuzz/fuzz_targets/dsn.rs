//! The DSN builder (`hedwig_message::dsn::build`) on arbitrary original messages and failure
//! details.
//!
//! Input: `META \0\0 MESSAGE`, or just `MESSAGE` (then the details are fixed). META is split
//! on `\0` into sender, recipient, response, enhanced code, relay, reason and queue id; the
//! sender and recipient are only used when they are valid mailboxes, as intake guarantees.
//! Checked:
//! - no panic, and a bounce is built whenever one is due;
//! - the bounce's own header section has only the fields the builder writes (nothing from the
//!   original message or the remote answer can inject a header);
//! - everything the builder writes (all but the quoted original headers) has CRLF line ends,
//!   no other control characters but TAB, lines of at most 998 octets;
//! - the MIME structure holds: three parts and the closing boundary, and mail-parser reads the
//!   result as a `multipart/report`;
//! - the quoted original header section is bounded.
#![no_main]

use hedwig_core::address::Mailbox;
use hedwig_message::dsn::{build, Limits, Params};
use hedwig_queue::job::{Envelope, Failure};
use libfuzzer_sys::fuzz_target;
use mail_parser::MimeHeaders;

const FIELDS: &[&str] = &[
    "From:",
    "To:",
    "Subject:",
    "Date:",
    "Message-ID:",
    "Auto-Submitted:",
    "In-Reply-To:",
    "References:",
    "MIME-Version:",
    "Content-Type:",
];

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn check_generated(text: &[u8]) {
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= 998, "generated line of {} octets", line.len());
        assert!(
            !line.iter().any(|&b| b.is_ascii_control() && b != b'\t'),
            "control character in generated line {:?}",
            String::from_utf8_lossy(line)
        );
    }
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && text[i - 1] == b'\r', "bare LF in generated text");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (meta, message) = match find(data, b"\0\0", 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 2..],
        ),
        None => (String::new(), data),
    };
    let mut meta = meta.split('\0');
    let mut next = |default: &str| meta.next().unwrap_or(default).to_string();
    let valid = |s: String, default: &str| match Mailbox::parse(&s) {
        Ok(m) => m.to_string(),
        Err(_) => default.to_string(),
    };
    let sender = valid(next(""), "alice@example.test");
    let recipient = valid(next(""), "bob@example.org");
    let response = next("550 5.1.1 <bob@example.org>: no such user");
    let dsn = next("5.1.1");
    let relay = next("mx.example.org[127.0.0.2]:25");
    let reason = next("rejected");
    let queue_id: String = next("0190AB12CD34EF56")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();

    let mut original = Envelope::new(
        queue_id,
        "web1.example.test".into(),
        sender,
        vec![recipient.clone().into()],
    );
    original.received_at = 1_795_400_000;
    let failure = Failure {
        at: 1_795_407_000,
        reason,
        code: Some(550),
        dsn: Some(dsn),
        response,
        relay: Some(relay.chars().take(300).collect()),
    };
    let failed = vec![(recipient, failure)];
    let params = Params {
        hostname: "relay.example.test",
        from: None,
        original: &original,
        message,
        failed: &failed,
        now: 1_795_407_331,
        limits: Limits::default(),
    };
    let out = build(&params).expect("a bounce is due");

    // The boundary, from the top-level Content-Type.
    let ct_at = find(
        &out,
        b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report;",
        0,
    )
    .expect("the report's Content-Type");
    let at = find(&out, b"boundary=\"", ct_at).expect("boundary parameter") + 10;
    let end = find(&out, b"\"", at).expect("boundary closed");
    let boundary = out[at..end].to_vec();
    let opener = [b"\r\n--".as_slice(), &boundary, b"\r\n"].concat();
    let closer = [b"\r\n--".as_slice(), &boundary, b"--\r\n"].concat();
    assert!(out.ends_with(&closer), "no closing boundary at the end");

    // Everything before the quoted headers is generated.
    let mut pos = 0;
    for _ in 0..3 {
        pos = find(&out, &opener, pos).expect("three parts") + opener.len();
    }
    let quoted_at = find(&out, b"\r\n\r\n", pos).expect("third part's header end") + 4;
    check_generated(&out[..quoted_at]);
    let quoted = &out[quoted_at..out.len() - closer.len()];
    assert!(quoted.len() <= Limits::default().returned_bytes + 2);

    // The bounce's header section: only the builder's fields.
    let head_end = find(&out, b"\r\n\r\n", 0).expect("header section");
    for line in out[..head_end].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        assert!(
            line.starts_with([' ', '\t']) || FIELDS.iter().any(|f| line.starts_with(f)),
            "unexpected header line {line:?}"
        );
    }

    let parsed = mail_parser::MessageParser::default()
        .parse(&out)
        .expect("mail-parser reads the bounce");
    let ct = parsed.content_type().expect("Content-Type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
});
