use mail_parser::{MessageParser, MimeHeaders};

use super::*;

const ORIGINAL: &[u8] = b"From: Alice <alice@example.test>\r\n\
To: bob@example.org, carol@example.net\r\n\
Subject: Quarterly report\r\n\
Message-ID: <orig-1@example.test>\r\n\
\r\n\
The body is not quoted in the bounce.\r\n";

fn envelope() -> Envelope {
    let mut e = Envelope::new(
        "0190AB12CD34EF56".into(),
        "web1.example.test".into(),
        "alice@example.test".into(),
        vec!["bob@example.org".into(), "carol@example.net".into()],
    );
    e.received_at = 1_795_400_000;
    e
}

fn rejected() -> Failure {
    Failure {
        at: 1_795_407_000,
        reason: "rejected".into(),
        code: Some(550),
        dsn: Some("5.1.1".into()),
        response: "550-5.1.1 The email account that you tried to reach does not exist.\r\n\
                   550 5.1.1 Please try double-checking the recipient's address."
            .into(),
        relay: Some("mx.example.org[127.0.0.2]:25".into()),
    }
}

fn expired() -> Failure {
    Failure {
        at: 1_795_407_100,
        reason: "expired".into(),
        code: Some(451),
        dsn: Some("4.7.1".into()),
        response: "451 4.7.1 Greylisted, try again later".into(),
        relay: Some("mx.example.net[127.0.0.3]:25".into()),
    }
}

fn no_mx() -> Failure {
    Failure {
        at: 1_795_407_200,
        reason: "null-mx".into(),
        code: None,
        dsn: None,
        response: "example.invalid publishes a null MX (RFC 7505): it accepts no mail".into(),
        relay: None,
    }
}

fn params<'a>(original: &'a Envelope, failed: &'a [(String, Failure)]) -> Params<'a> {
    Params {
        hostname: "relay.example.test",
        from: None,
        original,
        message: ORIGINAL,
        failed,
        now: 1_795_407_331,
        limits: Limits::default(),
    }
}

/// The `message/delivery-status` body as groups of (lowercase name, unfolded value).
fn status_groups(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).unwrap().replace("\r\n ", " ");
    text.split("\r\n\r\n")
        .filter(|g| !g.trim().is_empty())
        .map(|group| {
            group
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l
                        .split_once(':')
                        .unwrap_or_else(|| panic!("not a field: {l:?}"));
                    (n.to_ascii_lowercase(), v.trim().to_string())
                })
                .collect()
        })
        .collect()
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n == &name.to_ascii_lowercase())
        .map(|(_, v)| v.as_str())
}

fn part_body<'a>(message: &'a mail_parser::Message<'a>, index: usize) -> &'a [u8] {
    let part = &message.parts[index];
    &message.raw_message()[part.raw_body_offset() as usize..part.raw_end_offset() as usize]
}

#[test]
fn a_complete_dsn() {
    let original = envelope();
    let failed = vec![
        ("bob@example.org".to_string(), rejected()),
        ("carol@example.net".to_string(), expired()),
        ("dave@example.invalid".to_string(), no_mx()),
    ];
    let bytes = build(&params(&original, &failed)).unwrap();
    assert!(bytes.is_ascii());
    // CRLF everywhere, no bare LF.
    assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    let message = MessageParser::new().parse(&bytes).unwrap();

    // The top-level header fields.
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@relay.example.test"));
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("alice@example.test")
    );
    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(message.date().unwrap().to_timestamp(), 1_795_407_331);
    let id = message.message_id().unwrap();
    assert!(
        id.starts_with("dsn.0190AB12CD34EF56.") && id.ends_with("@relay.example.test"),
        "{id}"
    );
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(message.in_reply_to().as_text(), Some("orig-1@example.test"));
    let ct = message.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));

    // Three parts under the multipart.
    let root = &message.parts[0];
    let children = match &root.body {
        mail_parser::PartType::Multipart(children) => children.clone(),
        other => panic!("not multipart: {other:?}"),
    };
    assert_eq!(children.len(), 3);
    let (text_i, status_i, headers_i) = (
        children[0] as usize,
        children[1] as usize,
        children[2] as usize,
    );

    // 1: human-readable.
    let text = message.parts[text_i].text_contents().unwrap();
    let ct = message.parts[text_i].content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
    for needle in [
        "relay.example.test",
        "<bob@example.org>: host mx.example.org[127.0.0.2]:25 said:",
        "550-5.1.1 The email account that you tried to reach does not exist.",
        "550 5.1.1 Please try double-checking the recipient's address.",
        "<carol@example.net>: host mx.example.net[127.0.0.3]:25 said:",
        "451 4.7.1 Greylisted, try again later",
        "gave up",
        "<dave@example.invalid>:",
        "publishes a null MX",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // 2: machine-readable.
    let ct = message.parts[status_i].content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("message", Some("delivery-status"))
    );
    let groups = status_groups(part_body(&message, status_i));
    assert_eq!(groups.len(), 4, "{groups:?}");
    let per_message = &groups[0];
    assert_eq!(
        field(per_message, "Reporting-MTA"),
        Some("dns; relay.example.test")
    );
    assert_eq!(
        field(per_message, "X-Hedwig-Queue-ID"),
        Some("0190AB12CD34EF56")
    );
    assert_eq!(
        field(per_message, "Arrival-Date"),
        Some(rfc5322_date(1_795_400_000).as_str())
    );

    let bob = &groups[1];
    assert_eq!(
        field(bob, "Final-Recipient"),
        Some("rfc822; bob@example.org")
    );
    assert_eq!(field(bob, "Action"), Some("failed"));
    assert_eq!(field(bob, "Status"), Some("5.1.1"));
    assert_eq!(field(bob, "Remote-MTA"), Some("dns; mx.example.org"));
    assert_eq!(
        field(bob, "Diagnostic-Code"),
        Some(
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist. \
              550 5.1.1 Please try double-checking the recipient's address."
        )
    );
    assert_eq!(
        field(bob, "Last-Attempt-Date"),
        Some(rfc5322_date(1_795_407_000).as_str())
    );

    let carol = &groups[2];
    assert_eq!(
        field(carol, "Final-Recipient"),
        Some("rfc822; carol@example.net")
    );
    assert_eq!(field(carol, "Status"), Some("4.7.1"));
    assert_eq!(field(carol, "Remote-MTA"), Some("dns; mx.example.net"));
    assert_eq!(
        field(carol, "Diagnostic-Code"),
        Some("smtp; 451 4.7.1 Greylisted, try again later")
    );

    let dave = &groups[3];
    assert_eq!(field(dave, "Status"), Some("5.1.10"));
    assert_eq!(field(dave, "Remote-MTA"), None);
    assert!(field(dave, "Diagnostic-Code")
        .unwrap()
        .starts_with("X-Hedwig; example.invalid"));

    // 3: the original header section, byte for byte, and not the body.
    let ct = message.parts[headers_i].content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("rfc822-headers")));
    let quoted = part_body(&message, headers_i);
    let header_end = ORIGINAL.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    assert!(quoted.starts_with(&ORIGINAL[..header_end]));
    assert!(!String::from_utf8_lossy(&bytes).contains("The body is not quoted"));
}

#[test]
fn utf8_recipients_use_the_rfc6533_types() {
    let original = envelope();
    let failed = vec![
        ("josé@exämple.test".to_string(), rejected()),
        ("bob@example.org".to_string(), rejected()),
    ];
    let bytes = build(&params(&original, &failed)).unwrap();
    let message = MessageParser::new().parse(&bytes).unwrap();
    let ct = message.content_type().unwrap();
    assert_eq!(ct.attribute("report-type"), Some("global-delivery-status"));
    let status_i = (0..message.parts.len())
        .find(|&i| {
            message.parts[i]
                .content_type()
                .is_some_and(|c| c.subtype() == Some("global-delivery-status"))
        })
        .expect("a global-delivery-status part");
    assert_eq!(
        message.parts[status_i].content_transfer_encoding(),
        Some("8bit")
    );
    let groups = status_groups(part_body(&message, status_i));
    assert_eq!(
        field(&groups[1], "Final-Recipient"),
        Some("utf-8; josé@exämple.test")
    );
    assert_eq!(
        field(&groups[2], "Final-Recipient"),
        Some("rfc822; bob@example.org")
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("<josé@exämple.test>: host"));
}

#[test]
fn utf8_original_headers_are_global_headers() {
    let original = envelope();
    let failed = vec![("bob@example.org".to_string(), rejected())];
    let utf8 = "From: José <jose@example.test>\r\nSubject: Grüße\r\n\r\nbody\r\n";
    let mut p = params(&original, &failed);
    p.message = utf8.as_bytes();
    let bytes = build(&p).unwrap();
    let message = MessageParser::new().parse(&bytes).unwrap();
    let last = message
        .parts
        .iter()
        .find(|part| {
            part.content_type()
                .is_some_and(|c| c.subtype() == Some("global-headers"))
        })
        .expect("a message/global-headers part");
    assert_eq!(last.content_transfer_encoding(), Some("8bit"));
    assert!(String::from_utf8_lossy(&bytes).contains("Subject: Grüße\r\n"));
}

#[test]
fn never_to_the_null_sender_nor_for_a_bounce() {
    let failed = vec![("bob@example.org".to_string(), rejected())];
    for null in ["", "<>", "  "] {
        let mut original = envelope();
        original.mail_from = null.into();
        assert!(matches!(
            build(&params(&original, &failed)),
            Err(Error::NoBounce(_))
        ));
        assert!(bounce_job(&params(&original, &failed), "Q".into()).is_err());
    }
    let mut bounce = envelope();
    bounce.kind = Kind::Bounce;
    assert!(matches!(
        build(&params(&bounce, &failed)),
        Err(Error::NoBounce(_))
    ));
    assert!(matches!(
        build(&params(&envelope(), &[])),
        Err(Error::NoRecipients)
    ));
}

#[test]
fn the_bounce_job() {
    let original = envelope();
    let failed = vec![("bob@example.org".to_string(), rejected())];
    let mut p = params(&original, &failed);
    p.from = Some("postmaster@relay.example.test");
    let job = bounce_job(&p, "BOUNCE1".into()).unwrap();
    assert_eq!(job.envelope.queue_id, "BOUNCE1");
    assert_eq!(job.envelope.mail_from, "");
    assert_eq!(job.envelope.rcpt_to, vec!["alice@example.test".to_string()]);
    assert_eq!(job.envelope.kind, Kind::Bounce);
    assert_eq!(job.envelope.host, "web1.example.test");
    assert_eq!(job.envelope.received_at, 1_795_407_331);
    let message = MessageParser::new().parse(&job.message).unwrap();
    assert_eq!(
        message.from().unwrap().first().unwrap().address(),
        Some("postmaster@relay.example.test")
    );
    // A second bounce of the bounce is refused.
    let again = Params {
        original: &job.envelope,
        message: &job.message,
        ..p
    };
    assert!(matches!(build(&again), Err(Error::NoBounce(_))));
    // Two bounces never share a Message-ID or boundary.
    let other = bounce_job(&p, "BOUNCE2".into()).unwrap();
    let id = |m: &[u8]| {
        MessageParser::new()
            .parse(m)
            .unwrap()
            .message_id()
            .unwrap()
            .to_string()
    };
    assert_ne!(id(&job.message), id(&other.message));
}

#[test]
fn hostile_responses_stay_inside_their_field() {
    let original = envelope();
    let mut evil = rejected();
    evil.response =
        "550 no\r\nFinal-Recipient: rfc822; evil@x.test\n\r\n\u{7}Action: delivered".into();
    let failed = vec![("bob@example.org".to_string(), evil)];
    let bytes = build(&params(&original, &failed)).unwrap();
    let message = MessageParser::new().parse(&bytes).unwrap();
    let status_i = (0..message.parts.len())
        .find(|&i| {
            message.parts[i]
                .content_type()
                .is_some_and(|c| c.subtype() == Some("delivery-status"))
        })
        .unwrap();
    let groups = status_groups(part_body(&message, status_i));
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(
        field(&groups[1], "Final-Recipient"),
        Some("rfc822; bob@example.org")
    );
    assert_eq!(field(&groups[1], "Action"), Some("failed"));
    assert_eq!(
        groups[1]
            .iter()
            .filter(|(n, _)| n == "final-recipient")
            .count(),
        1
    );
}

#[test]
fn huge_headers_are_cut_on_a_line() {
    let original = envelope();
    let failed = vec![("bob@example.org".to_string(), rejected())];
    let mut big = Vec::new();
    for i in 0..10_000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    big.extend_from_slice(b"\r\nbody\r\n");
    let mut p = params(&original, &failed);
    p.message = &big;
    let bytes = build(&p).unwrap();
    assert!(
        bytes.len() < DEFAULT_RETURNED_BYTES + 8 * 1024,
        "{}",
        bytes.len()
    );
    let message = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(message.parts.len(), 4, "the structure survives");
    // No header without an end of line.
    let tail = String::from_utf8_lossy(&bytes);
    assert!(tail.contains("y\r\n\r\n--=_hedwig_dsn_"));
}

#[test]
fn status_codes() {
    let f = |reason: &str, dsn: Option<&str>| {
        status_code(&Failure {
            at: 0,
            reason: reason.into(),
            code: None,
            dsn: dsn.map(str::to_string),
            response: String::new(),
            relay: None,
        })
    };
    assert_eq!(f("rejected", Some("5.7.1")), "5.7.1");
    assert_eq!(f("rejected", Some("5.7.123")), "5.7.123");
    assert_eq!(f("rejected", Some("4.7.1")), "5.0.0");
    assert_eq!(f("rejected", Some("5.x.1")), "5.0.0");
    assert_eq!(f("rejected", Some("5.1.1.1")), "5.0.0");
    assert_eq!(f("rejected", None), "5.0.0");
    assert_eq!(f("expired", None), "4.4.7");
    assert_eq!(f("expired", Some("4.4.1")), "4.4.1");
    assert_eq!(f("expired", Some("junk")), "4.4.7");
    assert_eq!(f("null-mx", None), "5.1.10");
    assert_eq!(f("no-mx", None), "5.1.2");
    assert_eq!(f("smtputf8", None), "5.6.7");
}

#[test]
fn relay_hosts() {
    assert_eq!(
        relay_host("mx.example.org[192.0.2.1]:25").as_deref(),
        Some("mx.example.org")
    );
    assert_eq!(relay_host("[192.0.2.1]:25").as_deref(), Some("192.0.2.1"));
    assert_eq!(
        relay_host("mx.example.org").as_deref(),
        Some("mx.example.org")
    );
    assert_eq!(relay_host("").as_deref(), None);
}

#[test]
fn long_responses_are_bounded_and_wrapped() {
    let lines = response_lines(&"é".repeat(1000), 8192);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.len() <= 900));
    assert_eq!(lines.concat(), "é".repeat(1000));
    let lines = response_lines(&"x".repeat(100_000), 8192);
    assert_eq!(lines.last().map(String::as_str), Some("[...]"));
    assert!(lines.iter().map(String::len).sum::<usize>() <= 8192 + 5);
    let lines = response_lines(&"é".repeat(1000), 511);
    assert_eq!(lines.last().map(String::as_str), Some("[...]"));
    assert_eq!(lines[0], "é".repeat(255));
    assert_eq!(response_lines("550 exactly", 11), vec!["550 exactly"]);
    assert_eq!(
        response_lines("550 a\r\n\r\n550 b\r\n", 512),
        vec!["550 a", "550 b"]
    );
}

/// A thousand recipients rejected with 8 KB answers each, under headers of 64 KB: the bounce
/// stays small (issue 11 F4: it was 16.6 MB).
#[test]
fn a_bounce_is_bounded_whatever_it_reports() {
    let original = envelope();
    let mut long = rejected();
    long.response = format!(
        "550-5.1.1 {}\r\n550 5.1.1 {}",
        "a".repeat(4000),
        "b".repeat(4000)
    );
    let failed: Vec<(String, Failure)> = (0..1000)
        .map(|i| (format!("user{i}@example.org"), long.clone()))
        .collect();
    let mut headers = Vec::new();
    for i in 0..1500 {
        headers.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(30)).as_bytes());
    }
    headers.extend_from_slice(b"\r\nbody\r\n");
    assert!(headers.len() > 64 * 1024);
    let mut p = params(&original, &failed);
    p.message = &headers;
    let bytes = build(&p).unwrap();
    let limits = Limits::default();
    // Per recipient: the text and the status group, each with at most the diagnostic cap
    // (plus line breaks and `[...]`) and some fixed fields.
    let bound =
        limits.returned_bytes + limits.recipients * (2 * limits.diagnostic_bytes + 400) + 4096;
    assert!(bytes.len() <= bound, "{} > {bound}", bytes.len());
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("... and 900 more recipients (not listed: at most 100 per notification)."),
        "{text}"
    );
    let message = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(message.parts.len(), 4, "the structure survives");
    let status_i = (0..message.parts.len())
        .find(|&i| {
            message.parts[i]
                .content_type()
                .is_some_and(|c| c.subtype() == Some("delivery-status"))
        })
        .unwrap();
    let groups = status_groups(part_body(&message, status_i));
    assert_eq!(groups.len(), 1 + limits.recipients);
    for group in &groups[1..] {
        let diagnostic = field(group, "Diagnostic-Code").unwrap();
        assert!(
            diagnostic.starts_with("smtp; 550-5.1.1 aaa"),
            "{diagnostic}"
        );
        assert!(diagnostic.ends_with("[...]"), "{diagnostic}");
        assert!(
            diagnostic.len() <= limits.diagnostic_bytes + 20,
            "{}",
            diagnostic.len()
        );
        assert_eq!(field(group, "Status"), Some("5.1.1"));
    }
    // Smaller limits, as configured.
    p.limits = Limits {
        returned_bytes: 1000,
        diagnostic_bytes: 100,
        recipients: 3,
    };
    let small = build(&p).unwrap();
    assert!(small.len() < 6000, "{}", small.len());
    assert!(String::from_utf8_lossy(&small).contains("... and 997 more recipients"));
}
