//! Byte-level tests of the session: whole transcripts, and the same input split at every
//! position must give the same replies and messages.

use std::net::{IpAddr, Ipv4Addr};

use super::reply::reply;
use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 5));

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        starttls: false,
        max_errors: 10,
        bare_newline: Default::default(),
        recipient_check: None,
    }
}

#[derive(Debug, Default, PartialEq)]
struct Transcript {
    replies: Vec<String>,
    messages: Vec<Message>,
    closed: bool,
    tls: bool,
}

impl Transcript {
    fn codes(&self) -> Vec<u16> {
        self.replies
            .iter()
            .map(|r| r[..3].parse().unwrap())
            .collect()
    }
}

/// Feeds `chunks` one after another, answering every message with `250 queued`.
fn drive_with(session: &mut Session, chunks: &[&[u8]]) -> Transcript {
    let mut t = Transcript::default();
    for chunk in chunks {
        session.receive(chunk);
        // bounded: every action consumes input or ends the loop
        for _ in 0..100_000 {
            match session.next() {
                Action::Reply(r) => t.replies.push(r),
                Action::NeedMore => break,
                Action::Message(m) => {
                    t.messages.push(m);
                    match session.message_done(reply(250, "2.0.0 queued")) {
                        Action::Reply(r) => t.replies.push(r),
                        other => panic!("{other:?}"),
                    }
                }
                Action::StartTls => {
                    t.tls = true;
                    session.tls_started();
                }
                Action::Close => {
                    t.closed = true;
                    return t;
                }
            }
        }
    }
    t
}

fn drive(config: SessionConfig, chunks: &[&[u8]]) -> Transcript {
    drive_with(&mut Session::new(config, CLIENT), chunks)
}

/// The transcript of `input` is the same whole, cut in two anywhere, and byte by byte.
fn same_at_every_split(config: SessionConfig, input: &[u8]) -> Transcript {
    let whole = drive(config.clone(), &[input]);
    for cut in 0..=input.len() {
        let split = drive(config.clone(), &[&input[..cut], &input[cut..]]);
        assert_eq!(split, whole, "input cut at {cut}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(drive(config, &bytes), whole, "byte by byte");
    whole
}

const PIPELINED: &[u8] =
    b"EHLO client.test\r\nMAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n\
RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n\
Subject: hi\r\n\r\n..dot\r\nbody \xe9\r\n.\r\nQUIT\r\n";

#[test]
fn pipelined_transaction_split_everywhere() {
    let t = same_at_every_split(config(), PIPELINED);
    assert_eq!(t.codes(), vec![250, 250, 250, 250, 354, 250, 221]);
    assert!(t.closed);
    let ehlo = &t.replies[0];
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SIZE 1000",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    ] {
        assert!(ehlo.contains(&format!("250-{ext}\r\n")), "{ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"));
    assert_eq!(t.messages.len(), 1);
    let m = &t.messages[0];
    assert_eq!(m.mail_from, "a@example.com");
    assert_eq!(m.rcpt_to, vec!["b@example.org", "c@example.net"]);
    assert_eq!(m.body, b"Subject: hi\r\n\r\n.dot\r\nbody \xe9\r\n");
    assert_eq!(m.helo, "client.test");
    assert!(m.esmtp && !m.tls && !m.smtputf8);
    assert_eq!(m.client, CLIENT);
}

#[test]
fn two_messages_and_rset_in_one_session_split_everywhere() {
    let input = b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nRSET\r\nMAIL FROM:<s@y.test>\r\n\
RCPT TO:<x@y.test>\r\nDATA\r\nA\r\n.\r\nMAIL FROM:<s@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\nB\n.\nC\r\n.\r\nNOOP\r\n";
    let t = same_at_every_split(config(), input);
    assert_eq!(
        t.codes(),
        vec![250, 250, 250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 250]
    );
    assert_eq!(t.replies[0], "250 mx.test\r\n");
    assert_eq!(t.messages.len(), 2);
    assert_eq!(t.messages[0].body, b"A\r\n");
    assert_eq!(t.messages[1].body, b"B\r\n\r\nC\r\n");
    assert_eq!(t.messages[1].rcpt_to, vec!["z@y.test"]);
    assert!(!t.messages[0].esmtp);
    assert!(!t.closed);
}

#[test]
fn null_sender_is_accepted() {
    let t = drive(
        config(),
        &[b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nx\r\n.\r\n"],
    );
    assert_eq!(t.codes(), vec![250, 250, 250, 354, 250]);
    assert_eq!(t.messages[0].mail_from, "");
}

#[test]
fn bad_sequences() {
    let t = drive(
        config(),
        &[b"MAIL FROM:<a@b.test>\r\nEHLO c\r\nRCPT TO:<x@y.test>\r\nDATA\r\nMAIL FROM:<a@b.test>\r\n\
DATA\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n"],
    );
    // MAIL before EHLO, RCPT before MAIL, DATA before MAIL, DATA without RCPT, nested MAIL
    assert_eq!(t.codes(), vec![503, 250, 503, 503, 250, 554, 503, 221]);
    assert!(t.replies[0].starts_with("503 5.5.1"));
    assert!(t.replies[2].starts_with("503 5.5.1"));
    assert!(t.messages.is_empty());
}

#[test]
fn simple_commands() {
    let t = drive(
        config(),
        &[b"NOOP\r\nVRFY root\r\nHELP\r\nEXPN list\r\nBOGUS\r\nRSET\r\nquit\r\n"],
    );
    assert_eq!(t.codes(), vec![250, 252, 214, 502, 500, 250, 221]);
}

#[test]
fn syntax_errors_are_501() {
    let t = drive(
        config(),
        &[b"EHLO\r\nEHLO c\r\nMAIL FROM:a@b.test\r\nMAIL FROM:<not an address>\r\nMAIL FROM:<a@b.test>\r\n\
RCPT TO:<>\r\nRCPT TO:<nodomain>\r\nRCPT TO:<x@-bad-.test>\r\n"],
    );
    assert_eq!(t.codes(), vec![501, 250, 501, 501, 250, 501, 501, 501]);
}

#[test]
fn recipient_limit_is_452_and_bounded() {
    let mut input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for i in 0..10_000 {
        input.extend_from_slice(format!("RCPT TO:<r{i}@y.test>\r\n").as_bytes());
    }
    input.extend_from_slice(b"DATA\r\nx\r\n.\r\n");
    let t = drive(config(), &input.chunks(4096).collect::<Vec<_>>());
    let codes = t.codes();
    assert_eq!(codes.len(), 2 + 10_000 + 2);
    assert_eq!(&codes[2..5], &[250, 250, 250]);
    assert!(codes[5..10_002].iter().all(|&c| c == 452));
    assert!(t.replies[5].starts_with("452 4.5.3"));
    assert_eq!(t.messages[0].rcpt_to.len(), 3);
}

#[test]
fn size_limits() {
    // refused early from SIZE=
    let t = drive(config(), &[b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=1001\r\n"]);
    assert_eq!(t.codes(), vec![250, 552]);
    assert!(t.replies[1].starts_with("552 5.3.4"));
    // limit + 1 octets: refused after the data, session stays usable
    let mut input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 999]);
    input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let t = drive(config(), &[&input]);
    assert_eq!(t.codes(), vec![250, 250, 250, 354, 552, 250]);
    assert!(t.messages.is_empty());
    // exactly at the limit: accepted
    let mut input = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 998]);
    input.extend_from_slice(b"\r\n.\r\n");
    let t = drive(config(), &[&input]);
    assert_eq!(t.codes(), vec![250, 250, 250, 354, 250]);
    assert_eq!(t.messages[0].body.len(), 1000);
}

#[test]
fn long_command_line_is_refused_and_the_session_recovers() {
    let mut session = Session::new(config(), CLIENT);
    let big = vec![b'A'; 64 * 1024];
    let mut replies = Vec::new();
    // a 1 MB line in 64 KiB reads: one 500, then the rest is dropped as it comes
    for _ in 0..16 {
        let t = drive_with(&mut session, &[&big]);
        replies.extend(t.replies);
    }
    let t = drive_with(&mut session, &[b"\r\nNOOP\r\n"]);
    replies.extend(t.replies);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[0].starts_with("500 5.5.2"));
    assert!(replies[1].starts_with("250"));
    // a line of exactly the limit is read; one octet more is not
    let mut line = b"NOOP ".to_vec();
    line.resize(MAX_COMMAND_LINE - 2, b'x');
    line.extend_from_slice(b"\r\n");
    assert_eq!(drive(config(), &[&line]).codes(), vec![250]);
    line.insert(5, b'x');
    assert_eq!(drive(config(), &[&line]).codes(), vec![500]);
}

#[test]
fn nul_and_invalid_utf8_in_commands() {
    let t = drive(
        config(),
        &[b"EHLO c\0x\r\nMAIL FROM:<\xff\xfe@b.test>\r\nEHLO c\r\n"],
    );
    assert_eq!(t.codes(), vec![500, 500, 250]);
    assert!(t.replies[0].contains("NUL"));
    assert!(t.replies[1].contains("UTF-8"));
}

#[test]
fn too_many_errors_close_the_session() {
    let garbage: Vec<u8> = (0..50)
        .flat_map(|_| b"GET / HTTP/1.0\r\n".to_vec())
        .collect();
    let t = drive(config(), &[&garbage]);
    assert!(t.closed);
    assert_eq!(t.replies.len(), 10);
    assert!(t.replies[9].starts_with("421 4.7.0"));
}

#[test]
fn tls_client_hello_on_plain_port() {
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let t = drive(config(), &[&hello]);
    assert!(t.closed);
    assert_eq!(t.codes(), vec![421]);
}

#[test]
fn starttls_drops_pipelined_input_and_resets() {
    let cfg = SessionConfig {
        starttls: true,
        ..config()
    };
    let t = drive(
        cfg.clone(),
        &[
            b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@b.test>\r\n",
            b"MAIL FROM:<a@b.test>\r\nEHLO c\r\n",
        ],
    );
    assert!(t.tls);
    assert!(t.replies[0].contains("250-STARTTLS\r\n"));
    // 220, then (after TLS) MAIL before EHLO is 503: the injected one was never read,
    // and EHLO no longer offers STARTTLS
    assert_eq!(t.codes(), vec![250, 220, 503, 250]);
    assert!(!t.replies[3].contains("STARTTLS"));
    // not offered
    assert_eq!(drive(config(), &[b"STARTTLS\r\n"]).codes(), vec![502]);
}

#[test]
fn smtputf8_addresses() {
    let input =
        "EHLO c\r\nMAIL FROM:<jösé@exämple.test>\r\nMAIL FROM:<jösé@exämple.test> SMTPUTF8\r\n\
RCPT TO:<用户@例子.test>\r\nDATA\r\nSubject: ünïcödé\r\n\r\n日本語\r\n.\r\n";
    let t = same_at_every_split(config(), input.as_bytes());
    assert_eq!(t.codes(), vec![250, 553, 250, 250, 354, 250]);
    let m = &t.messages[0];
    assert!(m.smtputf8);
    assert_eq!(m.mail_from, "jösé@exämple.test");
    assert_eq!(m.rcpt_to, vec!["用户@例子.test"]);
    assert_eq!(m.body, "Subject: ünïcödé\r\n\r\n日本語\r\n".as_bytes());
    // a non-ASCII recipient in a transaction without SMTPUTF8
    let t = drive(
        config(),
        &["EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<用户@例子.test>\r\n".as_bytes()],
    );
    assert_eq!(t.codes(), vec![250, 250, 553]);
}

#[test]
fn binarymime_and_bdat_are_refused() {
    let t = drive(
        config(),
        &[b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nBDAT 10 LAST\r\n0123456789"],
    );
    assert_eq!(t.codes(), vec![250, 555, 421]);
    assert!(t.closed);
}

#[test]
fn received_header() {
    let t = drive(
        config(),
        &[b"EHLO we(b)\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nx\r\n.\r\n"],
    );
    let m = &t.messages[0];
    assert_eq!(
        m.received_header("mx.test", "ID1", 1_795_406_400),
        "Received: from we_b_ ([172.17.0.5])\r\n\tby mx.test (mailman) with ESMTP id ID1\r\n\
\tfor <x@y.test>;\r\n\tMon, 23 Nov 2026 04:00:00 +0000\r\n"
    );
    let mut two = m.clone();
    two.rcpt_to.push("z@y.test".into());
    two.client = "::1".parse().unwrap();
    two.esmtp = false;
    let h = two.received_header("mx.test", "ID2", 0);
    assert!(!h.contains("for <"), "{h}");
    assert!(
        h.contains("([IPv6:::1])") && h.contains("with SMTP id ID2"),
        "{h}"
    );
    // The HELO name and the recipient are untrusted: nothing in them can end a clause or
    // open a comment or an address (hedwig_message::trace's sanitising).
    let mut hostile = m.clone();
    hostile.helo = "a<b>;c\"d\\".into();
    hostile.rcpt_to = vec!["x>;y@y.test".into()];
    hostile.client = "::ffff:192.0.2.1".parse().unwrap();
    let h = hostile.received_header("mx.test", "ID3", 0);
    assert!(
        h.starts_with("Received: from a_b__c_d_ ([192.0.2.1])\r\n"),
        "{h}"
    );
    assert!(h.contains("\tfor <x__y@y.test>;"), "{h}");
}

#[test]
fn bare_lf_commands_work() {
    let t = drive(
        config(),
        &[b"EHLO c\nMAIL FROM:<a@b.test>\nRCPT TO:<x@y.test>\nDATA\nhello\nthere\r\n.\r\nQUIT\n"],
    );
    assert_eq!(t.codes(), vec![250, 250, 250, 354, 250, 221]);
    assert_eq!(t.messages[0].body, b"hello\r\nthere\r\n");
}

/// The end-of-data shapes of the SMTP smuggling advisory (SEC Consult, Dec 2023; Postfix's
/// CVE-2023-51764 notes): only `\r\n.\r\n` ends DATA. A pipelined second transaction behind
/// any other shape stays inside the first message, whole input split at every position.
const SMUGGLING_SHAPES: [&[u8]; 9] = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r.\n",
    b"\r\n\x00.\r\n",
];

fn smuggling_input(shape: &[u8]) -> Vec<u8> {
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nSubject: s\r\n\r\nbody"
            .to_vec();
    input.extend_from_slice(shape);
    input.extend_from_slice(
        b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: forged\r\n\r\nx\r\n.\r\nQUIT\r\n",
    );
    input
}

#[test]
fn smuggled_transaction_stays_in_the_body_at_every_split() {
    for shape in SMUGGLING_SHAPES {
        let t = same_at_every_split(config(), &smuggling_input(shape));
        assert_eq!(t.codes(), vec![250, 250, 250, 354, 250, 221], "{shape:?}");
        assert_eq!(t.messages.len(), 1, "{shape:?}");
        let m = &t.messages[0];
        assert_eq!(m.rcpt_to, vec!["x@y.test"], "{shape:?}");
        let body = String::from_utf8_lossy(&m.body);
        assert!(body.starts_with("Subject: s\r\n\r\nbody"), "{body:?}");
        assert!(
            body.ends_with("MAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: forged\r\n\r\nx\r\n"),
            "{shape:?}: {body:?}"
        );
        // every line of what is stored ends in CRLF
        assert!(
            !m.body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "{body:?}"
        );
    }
}

#[test]
fn reject_mode_refuses_bare_lf_and_closes() {
    let config = SessionConfig {
        bare_newline: super::data::BareNewline::Reject,
        ..config()
    };
    for shape in SMUGGLING_SHAPES {
        let t = same_at_every_split(config.clone(), &smuggling_input(shape));
        let bare_lf = shape.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
            || shape.first() == Some(&b'\n');
        if bare_lf {
            assert_eq!(t.codes(), vec![250, 250, 250, 354, 550], "{shape:?}");
            assert_eq!(t.replies[4], "550 5.5.2 Error: bare <LF> received\r\n");
            assert!(t.closed && t.messages.is_empty(), "{shape:?}");
        } else {
            // no bare LF at all: one message, the hidden commands inside it
            assert_eq!(t.codes(), vec![250, 250, 250, 354, 250, 221], "{shape:?}");
            assert_eq!(t.messages.len(), 1);
        }
    }
    // a command line ending in a bare LF
    let t = drive(config, &[b"EHLO c\r\nNOOP\nQUIT\r\n"]);
    assert_eq!(t.codes(), vec![250, 550]);
    assert!(t.closed);
}

#[test]
fn disconnect_mid_data_yields_no_message() {
    let t = drive(
        config(),
        &[b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\npartial\r\n"],
    );
    assert_eq!(t.codes(), vec![250, 250, 250, 354]);
    assert!(t.messages.is_empty());
}

#[test]
fn recipient_check_refuses_and_counts_as_errors() {
    let check = RecipientCheck(std::sync::Arc::new(|address: &str| {
        if address.starts_with("ok") {
            Ok(())
        } else {
            Err((550, format!("5.1.1 <{address}> unknown")))
        }
    }));
    let cfg = SessionConfig {
        recipient_check: Some(check),
        max_errors: 3,
        ..config()
    };
    let t = same_at_every_split(
        cfg.clone(),
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<no@b.test>\r\nRCPT TO:<ok@b.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(t.codes(), vec![250, 250, 550, 250, 354, 250]);
    assert_eq!(t.messages[0].rcpt_to, vec!["ok@b.test".to_string()]);
    assert!(
        t.replies[2].contains("5.1.1 <no@b.test> unknown"),
        "{:?}",
        t.replies
    );
    // Guessing closes the session after max_errors.
    let t = drive(
        cfg,
        &[b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nRCPT TO:<b@b>\r\nRCPT TO:<c@b>\r\nRCPT TO:<ok@b>\r\n"],
    );
    assert_eq!(t.codes(), vec![250, 250, 550, 550, 421]);
    assert!(t.closed);
}

#[test]
fn recipient_check_replaces_the_syntax_check() {
    // VERP local parts are longer than the 64 octets Mailbox::parse allows: the check alone
    // decides, and only what it takes goes in.
    let long = format!("bounces+{}@b.test", "a".repeat(100));
    let expected = long.clone();
    let check = RecipientCheck(std::sync::Arc::new(move |address: &str| {
        if address == expected {
            Ok(())
        } else {
            Err((550, "5.1.1 no".into()))
        }
    }));
    let cfg = SessionConfig {
        recipient_check: Some(check),
        ..config()
    };
    let input = format!(
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<{long}>\r\nRCPT TO:<other@b.test>\r\nDATA\r\nx\r\n.\r\n"
    );
    let t = same_at_every_split(cfg, input.as_bytes());
    assert_eq!(t.codes(), vec![250, 250, 250, 550, 354, 250]);
    assert_eq!(t.messages[0].rcpt_to, vec![long]);
    // Without a check the same address is refused by the syntax check.
    let t = drive(config(), &[input.as_bytes()]);
    assert_eq!(t.codes()[2], 501);
}

fn policy(domains: &[&str], allow_messages: usize) -> AppPolicy {
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(allow_messages));
    AppPolicy {
        who: "container web-1".into(),
        sender_domains: Some(domains.iter().map(|d| d.to_string()).collect()),
        rate: Some(RateCheck(std::sync::Arc::new(move || {
            use std::sync::atomic::Ordering;
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }))),
        bad_label: None,
    }
}

fn with_policy(policy: AppPolicy) -> Session {
    let mut s = Session::new(config(), CLIENT);
    s.set_app(Some(hedwig_core::wire::App {
        name: "web-1".into(),
        source: hedwig_core::wire::AppSource::Container,
        image: None,
        compose_project: None,
        compose_service: None,
        lane: Some("bulk".into()),
    }));
    s.set_app_policy(Some(policy));
    s
}

#[test]
fn label_policy_refuses_foreign_sender_domains() {
    let mut s = with_policy(policy(&["shop.test"], 100));
    assert_eq!(s.app().map(|a| a.lane.as_deref()), Some(Some("bulk")));
    let t = drive_with(
        &mut s,
        &[b"EHLO c\r\nMAIL FROM:<a@evil.test>\r\nMAIL FROM:<a@shop.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n\
From: a@shop.test\r\n\r\nok\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n\
From: Boss <boss@evil.test>\r\n\r\nno\r\n.\r\nMAIL FROM:<a@shop.test>\r\n"],
    );
    assert_eq!(
        t.codes(),
        [250, 550, 250, 250, 354, 250, 250, 250, 354, 550, 250]
    );
    assert_eq!(
        t.replies[1],
        reply(550, "5.7.1 container web-1 may not send as evil.test")
    );
    assert_eq!(
        t.replies[9],
        reply(550, "5.7.1 container web-1 may not send as evil.test")
    );
    assert_eq!(t.messages.len(), 1);
    // the caller takes each refusal after its reply; untaken, the last one stays
    assert_eq!(
        s.take_policy_refusal().as_deref(),
        Some("550 5.7.1 container web-1 may not send as evil.test")
    );
    assert_eq!(s.take_policy_refusal(), None);
}

#[test]
fn label_rate_gives_451_at_mail_and_policy_refusals_are_not_errors() {
    let mut cfg = config();
    cfg.max_errors = 2;
    let mut s = Session::new(cfg, CLIENT);
    s.set_app_policy(Some(policy(&["shop.test"], 1)));
    let mut input = b"EHLO c\r\nMAIL FROM:<a@shop.test>\r\nRSET\r\n".to_vec();
    for _ in 0..5 {
        input.extend_from_slice(b"MAIL FROM:<a@shop.test>\r\n");
    }
    let t = drive_with(&mut s, &[&input]);
    assert_eq!(t.codes(), [250, 250, 250, 451, 451, 451, 451, 451]);
    assert!(t.replies[3].starts_with("451 4.7.1 container web-1 is over its hedwig.rate"));
    assert!(!t.closed, "over the rate is not a bad command");
    assert!(s
        .take_policy_refusal()
        .is_some_and(|r| r.starts_with("451 4.7.1")));
}

#[test]
fn unreadable_label_gives_451() {
    let mut s = with_policy(AppPolicy {
        who: "container web-1".into(),
        bad_label: Some("hedwig.rate=\"fast\"".into()),
        ..Default::default()
    });
    let t = drive_with(&mut s, &[b"EHLO c\r\nMAIL FROM:<a@shop.test>\r\n"]);
    assert_eq!(
        t.replies[1],
        reply(
            451,
            "4.3.5 container web-1 has a label mailman cannot read: hedwig.rate=\"fast\""
        )
    );
}

#[test]
fn no_app_no_policy() {
    let mut s = Session::new(config(), CLIENT);
    assert!(s.app().is_none());
    let t = drive_with(&mut s, &[b"EHLO c\r\nMAIL FROM:<a@evil.test>\r\n"]);
    assert_eq!(t.codes(), [250, 250]);
}

#[test]
fn the_sessions_app_goes_with_each_message() {
    let app = hedwig_core::wire::App {
        name: "shop-billing-1".into(),
        source: hedwig_core::wire::AppSource::Container,
        image: Some("shop/billing:4".into()),
        compose_project: Some("shop".into()),
        compose_service: Some("billing".into()),
        lane: None,
    };
    let mut session = Session::new(config(), CLIENT);
    session.set_app(Some(app.clone()));
    let t = drive_with(&mut session, &[PIPELINED]);
    assert_eq!(t.messages.len(), 1);
    assert_eq!(t.messages[0].app, Some(app));
    // without one, messages carry none
    assert_eq!(drive(config(), &[PIPELINED]).messages[0].app, None);
}
