use super::*;

const POSTFIX_DSN: &[u8] = include_bytes!("../../testdata/reports/postfix-dsn.eml");
const ARF: &[u8] = include_bytes!("../../testdata/reports/arf.eml");

#[test]
fn a_postfix_dsn() {
    let Report::Delivery(r) = parse(POSTFIX_DSN).unwrap() else {
        panic!("not a DSN")
    };
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r.final_recipient.as_deref(), Some("bob@example.org"));
    assert_eq!(r.original_recipient.as_deref(), Some("bob@example.org"));
    assert_eq!(r.action, "failed");
    assert!(r.is_failure());
    assert_eq!(r.status, "5.1.1");
    assert_eq!(r.remote_mta.as_deref(), Some("store.example.org"));
    assert_eq!(
        r.diagnostic.as_deref(),
        Some("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in local recipient table")
    );
    assert_eq!(r.reply_code(), Some(550));
}

#[test]
fn our_own_dsns_read_back() {
    use crate::dsn::{build, Limits, Params};
    use hedwig_queue::job::Failure;
    let mut original = hedwig_queue::job::Envelope::new(
        "0190AB12CD34EF56".into(),
        "web1.example.test".into(),
        "alice@example.test".into(),
        vec!["bob@example.org".into(), "carol@example.net".into()],
    );
    original.received_at = 1_795_400_000;
    let failed = vec![
        (
            "bob@example.org".to_string(),
            Failure {
                at: 1_795_407_000,
                reason: "rejected".into(),
                code: Some(550),
                dsn: Some("5.1.1".into()),
                response: "550 5.1.1 no such user".into(),
                relay: Some("mx.example.org[127.0.0.2]:25".into()),
            },
        ),
        (
            "carol@example.net".to_string(),
            Failure {
                at: 1_795_407_100,
                reason: "expired".into(),
                code: Some(451),
                dsn: Some("4.7.1".into()),
                response: "451 4.7.1 Greylisted".into(),
                relay: None,
            },
        ),
    ];
    let bytes = build(&Params {
        hostname: "relay.example.test",
        from: None,
        original: &original,
        message: b"Subject: x\r\n\r\nbody\r\n",
        failed: &failed,
        now: 1_795_407_331,
        limits: Limits::default(),
    })
    .unwrap();
    let Report::Delivery(r) = parse(&bytes).unwrap() else {
        panic!("not a DSN")
    };
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].final_recipient.as_deref(), Some("bob@example.org"));
    assert_eq!(
        (r[0].action.as_str(), r[0].status.as_str()),
        ("failed", "5.1.1")
    );
    assert_eq!(r[1].final_recipient.as_deref(), Some("carol@example.net"));
    assert_eq!(r[1].action, "failed");
}

#[test]
fn an_arf_report() {
    let Report::Feedback(f) = parse(ARF).unwrap() else {
        panic!("not ARF")
    };
    assert_eq!(f.feedback_type, "abuse");
    assert_eq!(f.user_agent.as_deref(), Some("SomeGenerator/1.0"));
    assert_eq!(f.original_rcpt_to, vec!["<bob@example.org>".to_string()]);
}

#[test]
fn a_delay_notice_is_not_a_failure() {
    let text = String::from_utf8_lossy(POSTFIX_DSN)
        .replace("Action: failed", "Action: delayed")
        .replace("Status: 5.1.1", "Status: 4.4.1");
    let Report::Delivery(r) = parse(text.as_bytes()).unwrap() else {
        panic!("not a DSN")
    };
    assert!(!r[0].is_failure());
    assert_eq!(r[0].status, "4.4.1");
}

#[test]
fn what_is_not_a_report() {
    assert_eq!(
        parse(b"Subject: I am on vacation\r\n\r\nBack on Monday.\r\n"),
        Err(ReportError::NotAReport)
    );
    assert!(parse(b"").is_err());
    let no_status = String::from_utf8_lossy(POSTFIX_DSN).replace("Status: 5.1.1\n", "");
    assert!(matches!(
        parse(no_status.as_bytes()),
        Err(ReportError::Malformed(_))
    ));
    let bad_status = String::from_utf8_lossy(POSTFIX_DSN).replace("Status: 5.1.1", "Status: 9.x");
    assert!(matches!(
        parse(bad_status.as_bytes()),
        Err(ReportError::Malformed(_))
    ));
    let no_type = String::from_utf8_lossy(ARF).replace("Feedback-Type: abuse\n", "");
    assert!(matches!(
        parse(no_type.as_bytes()),
        Err(ReportError::Malformed(_))
    ));
    let bad_type =
        String::from_utf8_lossy(ARF).replace("Feedback-Type: abuse", "Feedback-Type: <x>");
    assert!(matches!(
        parse(bad_type.as_bytes()),
        Err(ReportError::Malformed(_))
    ));
}

#[test]
fn bounded() {
    // Many recipient groups and a huge folded value: kept within MAX_GROUPS and MAX_VALUE.
    let mut groups = String::new();
    for i in 0..5_000 {
        groups.push_str(&format!(
            "Final-Recipient: rfc822; r{i}@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        ));
    }
    let fold = format!("Diagnostic-Code: smtp; 550{}\n", "\n x".repeat(50_000));
    let body = String::from_utf8_lossy(POSTFIX_DSN)
        .replace(
            "Final-Recipient: rfc822; bob@example.org\n",
            &format!("{fold}Final-Recipient: rfc822; bob@example.org\n"),
        )
        .replace(
            "--ABC123.1700000000/mx.example.org\nContent-Description: Undelivered",
            &format!(
                "{groups}--ABC123.1700000000/mx.example.org\nContent-Description: Undelivered"
            ),
        );
    let Report::Delivery(r) = parse(body.as_bytes()).unwrap() else {
        panic!("not a DSN")
    };
    assert!(r.len() <= MAX_GROUPS, "{}", r.len());
    assert!(r.len() > 100);
    assert!(r[0].diagnostic.as_deref().unwrap().chars().count() <= MAX_VALUE);
    // Binary junk does not panic.
    let mut junk = POSTFIX_DSN.to_vec();
    for (i, b) in junk.iter_mut().enumerate() {
        if i % 7 == 0 {
            *b = (i % 256) as u8;
        }
    }
    let _ = parse(&junk);
}

/// Found by the `report` fuzz target: malformed MIME that reaches a `debug_assert!` inside
/// mail-parser 0.11 (compiled out in release; off for mail-parser in our debug profile too).
/// The report parser answers it like any other input: no panic.
#[test]
fn fuzz_input_reaching_a_mail_parser_debug_assert_does_not_panic() {
    let input = include_bytes!("fuzz-mail-parser-debug-assert.eml");
    let _ = parse(input);
}
