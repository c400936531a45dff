//! Byte-level tests of SMTP AUTH in the session: the exchanges of PLAIN and LOGIN, their
//! refusals, what is advertised where, and `auth.require`. Credentials are answered by a
//! stand-in verdict (`billing` / `right`); the real check is [`crate::auth`]'s.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;

use super::reply::reply;
use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 5));

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        starttls: true,
        max_errors: 10,
        bare_newline: Default::default(),
        recipient_check: None,
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

const LOCAL: AuthPolicy = AuthPolicy {
    offered: true,
    plaintext: true,
    required: false,
};

#[derive(Debug, Default, PartialEq)]
struct Transcript {
    replies: Vec<String>,
    checked: Vec<Credentials>,
    messages: Vec<Message>,
    closed: bool,
}

impl Transcript {
    fn codes(&self) -> Vec<u16> {
        self.replies
            .iter()
            .map(|r| r[..3].parse().unwrap())
            .collect()
    }
}

/// Feeds `chunks`; credentials `billing`/`right` are accepted with lane `transactional`,
/// `blocked` is blocked, anything else refused; STARTTLS "succeeds" at once.
fn drive_with(session: &mut Session, chunks: &[&[u8]]) -> Transcript {
    let mut t = Transcript::default();
    for chunk in chunks {
        session.receive(chunk);
        for _ in 0..100_000 {
            let action = match session.step() {
                Step::Authenticate(c) => {
                    let outcome = match (c.login.as_str(), c.password.as_str()) {
                        ("billing", "right") => AuthOutcome::Accepted {
                            lane: Some("transactional".into()),
                        },
                        ("blocked", _) => AuthOutcome::Blocked,
                        _ => AuthOutcome::Refused,
                    };
                    t.checked.push(c);
                    session.auth_done(outcome)
                }
                Step::Action(a) => a,
            };
            match action {
                Action::Reply(r) => t.replies.push(r),
                Action::NeedMore => break,
                Action::Message(m) => {
                    t.messages.push(m);
                    if let Action::Reply(r) = session.message_done(reply(250, "2.0.0 queued")) {
                        t.replies.push(r);
                    }
                }
                Action::StartTls => session.tls_started(),
                Action::Close => {
                    t.closed = true;
                    return t;
                }
            }
        }
    }
    t
}

fn drive(policy: AuthPolicy, input: &[u8]) -> Transcript {
    let mut session = Session::new(config(), CLIENT);
    session.set_auth(policy);
    drive_with(&mut session, &[input])
}

/// The same transcript whole, cut in two anywhere, and byte by byte.
fn same_at_every_split(policy: AuthPolicy, input: &[u8]) -> Transcript {
    let whole = drive(policy, input);
    for cut in 0..=input.len() {
        let mut session = Session::new(config(), CLIENT);
        session.set_auth(policy);
        let split = drive_with(&mut session, &[&input[..cut], &input[cut..]]);
        assert_eq!(split, whole, "input cut at {cut}");
    }
    let mut session = Session::new(config(), CLIENT);
    session.set_auth(policy);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(drive_with(&mut session, &bytes), whole, "byte by byte");
    whole
}

fn mail_after(auth: &str) -> Vec<u8> {
    format!(
        "EHLO c.test\r\n{auth}MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n\
DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    )
    .into_bytes()
}

#[test]
fn plain_with_an_initial_response_names_the_app() {
    let auth = format!("AUTH PLAIN {}\r\n", b64(b"\0billing\0right"));
    let t = same_at_every_split(LOCAL, &mail_after(&auth));
    assert_eq!(t.codes(), vec![250, 235, 250, 250, 354, 250, 221]);
    assert!(
        t.replies[0].contains("250-AUTH PLAIN LOGIN\r\n"),
        "{}",
        t.replies[0]
    );
    assert_eq!(t.replies[1], "235 2.7.0 Authentication successful\r\n");
    let app = t.messages[0].app.clone().unwrap();
    // RFC 3848: "A" for a session with a login; the login itself stays out of the header
    let received = t.messages[0].received_header("mx.test", "ID", 0);
    assert!(received.contains(" with ESMTPA id ID"), "{received}");
    assert!(!received.contains("billing"), "{received}");
    assert_eq!(app.name, "billing");
    assert_eq!(app.source, hedwig_core::wire::AppSource::Login);
    assert_eq!(app.lane.as_deref(), Some("transactional"));
}

#[test]
fn plain_with_a_continuation_and_login_with_two_prompts() {
    let auth = format!("AUTH PLAIN\r\n{}\r\n", b64(b"billing\0billing\0right"));
    let t = same_at_every_split(LOCAL, &mail_after(&auth));
    assert_eq!(t.codes(), vec![250, 334, 235, 250, 250, 354, 250, 221]);
    assert_eq!(t.replies[1], "334 \r\n");
    assert_eq!(t.messages[0].app.as_ref().unwrap().name, "billing");

    let auth = format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64(b"billing"), b64(b"right"));
    let t = same_at_every_split(LOCAL, &mail_after(&auth));
    assert_eq!(t.codes(), vec![250, 334, 334, 235, 250, 250, 354, 250, 221]);
    assert_eq!(t.replies[1], "334 VXNlcm5hbWU6\r\n");
    assert_eq!(t.replies[2], "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        t.checked,
        vec![Credentials {
            login: "billing".into(),
            password: "right".into()
        }]
    );
    // LOGIN with the user name as initial response: one prompt
    let auth = format!("AUTH LOGIN {}\r\n{}\r\n", b64(b"billing"), b64(b"right"));
    let t = drive(LOCAL, &mail_after(&auth));
    assert_eq!(t.codes(), vec![250, 334, 235, 250, 250, 354, 250, 221]);
}

#[test]
fn cancel_bad_base64_wrong_password_twice_and_in_a_transaction() {
    let wrong = b64(b"\0billing\0wrong");
    let right = b64(b"\0billing\0right");
    let input = format!(
        "EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n{}\r\n*\r\nAUTH PLAIN !!!\r\n\
AUTH PLAIN\r\nnot-base64\r\nAUTH PLAIN {}\r\nAUTH CRAM-MD5\r\nAUTH PLAIN {wrong}\r\n\
MAIL FROM:<a@example.com>\r\nAUTH PLAIN {right}\r\nRSET\r\nAUTH PLAIN {right}\r\n\
AUTH PLAIN {right}\r\n",
        b64(b"u"),
        b64(b"no-nul-here"),
    );
    let t = same_at_every_split(LOCAL, input.as_bytes());
    assert_eq!(
        t.codes(),
        vec![
            250, 334, 501, // PLAIN cancelled
            334, 334, 501, // LOGIN cancelled at the password
            501, // bad base64 as initial response
            334, 501, // bad base64 as response
            501, // base64 of something that is no PLAIN message
            504, // an unknown mechanism
            535, // a wrong password
            250, 503, // AUTH inside a transaction
            250, 235, // after RSET
            503, // AUTH twice
        ],
        "{:?}",
        t.replies
    );
    assert_eq!(t.replies[2], "501 5.7.0 Authentication cancelled\r\n");
    // AUTH after HELO: never offered there
    let helo = drive(
        LOCAL,
        format!("HELO c\r\nAUTH PLAIN {right}\r\n").as_bytes(),
    );
    assert_eq!(helo.codes(), vec![250, 503]);
    assert_eq!(
        t.replies[11],
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert!(!t.closed);
    assert_eq!(t.checked.len(), 2, "only whole credentials are checked");
}

#[test]
fn blocked_client_is_closed_with_421() {
    let input = format!("EHLO c\r\nAUTH PLAIN {}\r\nNOOP\r\n", b64(b"\0blocked\0x"));
    let t = drive(LOCAL, input.as_bytes());
    assert_eq!(t.codes(), vec![250, 421]);
    assert!(t.closed);
}

#[test]
fn not_offered_over_plain_text_off_local_networks_until_starttls() {
    let remote = AuthPolicy {
        plaintext: false,
        ..LOCAL
    };
    let auth = format!("AUTH PLAIN {}\r\n", b64(b"\0billing\0right"));
    // what follows STARTTLS is sent after the handshake (pipelined input is dropped)
    let before = format!("EHLO c\r\n{auth}STARTTLS\r\n");
    let after = format!("EHLO c\r\n{auth}");
    let run = |policy| {
        let mut session = Session::new(config(), CLIENT);
        session.set_auth(policy);
        drive_with(&mut session, &[before.as_bytes(), after.as_bytes()])
    };
    let t = run(remote);
    assert_eq!(t.codes(), vec![250, 538, 220, 250, 235], "{:?}", t.replies);
    assert!(!t.replies[0].contains("AUTH"), "{}", t.replies[0]);
    assert_eq!(
        t.replies[1],
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert!(t.replies[3].contains("250-AUTH PLAIN LOGIN\r\n"));
    assert!(t.checked.len() == 1);
    // no AUTH configured: not advertised, and AUTH is refused
    let t = run(AuthPolicy::default());
    assert_eq!(t.codes(), vec![250, 502, 220, 250, 502]);
    assert!(!t.replies[3].contains("AUTH"));
}

#[test]
fn required_auth_refuses_mail_before_auth_and_starttls_forgets_the_login() {
    let required = AuthPolicy {
        required: true,
        ..LOCAL
    };
    let t = drive(required, &mail_after(""));
    assert_eq!(t.codes()[..2], [250, 530]);
    assert_eq!(t.replies[1], "530 5.7.0 Authentication required\r\n");
    assert!(t.messages.is_empty());
    let auth = format!("AUTH PLAIN {}\r\n", b64(b"\0billing\0right"));
    let t = drive(required, &mail_after(&auth));
    assert_eq!(t.messages.len(), 1);
    // a login made before STARTTLS does not survive it (RFC 3207 §4.2)
    let mut session = Session::new(config(), CLIENT);
    session.set_auth(required);
    let before = format!("EHLO c\r\n{auth}STARTTLS\r\n");
    let after = b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n";
    let t = drive_with(&mut session, &[before.as_bytes(), after]);
    assert_eq!(t.codes(), vec![250, 235, 220, 250, 530]);
}

#[test]
fn a_caller_without_auth_support_answers_454() {
    let mut session = Session::new(config(), CLIENT);
    session.set_auth(LOCAL);
    session.receive(format!("EHLO c\r\nAUTH PLAIN {}\r\nNOOP\r\n", b64(b"\0a\0b")).as_bytes());
    let mut codes = Vec::new();
    for _ in 0..10 {
        match session.next() {
            Action::Reply(r) => codes.push(r[..3].to_string()),
            _ => break,
        }
    }
    assert_eq!(codes, ["250", "454", "250"]);
}

#[test]
fn the_login_wins_over_the_containers_app() {
    let mut session = Session::new(config(), CLIENT);
    session.set_auth(LOCAL);
    session.set_app(Some(hedwig_core::wire::App {
        name: "shop-billing-1".into(),
        source: hedwig_core::wire::AppSource::Container,
        image: None,
        compose_project: None,
        compose_service: None,
        lane: None,
    }));
    let auth = format!("AUTH PLAIN {}\r\n", b64(b"\0billing\0right"));
    let t = drive_with(&mut session, &[&mail_after(&auth)]);
    assert_eq!(t.messages[0].app.as_ref().unwrap().name, "billing");
    assert_eq!(session.login(), Some("billing"));
}
