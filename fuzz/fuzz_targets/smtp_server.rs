//! mailman's SMTP server state machine (`mailman::smtp::Session`) fed an arbitrary client
//! byte stream.
//!
//! The first input byte picks the chunk size the stream is pushed in (1 to 256 octets); the
//! rest is what the client sends. The session is driven like `mailman::server` does: replies
//! are collected, `NeedMore` pushes the next chunk, a finished message gets a 250 or 451,
//! STARTTLS "succeeds" at once. AUTH is offered (also without TLS): credentials with the
//! password `pw` are accepted, any other refused. Checked:
//! - no panic, and every call returns (a loop that makes no progress is caught by a bound);
//! - every reply is well formed: `ddd` + SP or `-`, printable text, CRLF, no bare CR/LF;
//! - every message is within the size limit and its body ends every line with CRLF;
//! - credentials handed over are non-empty and hold no NUL, and a message after a successful
//!   AUTH carries the login as its app;
//! - the replies and messages do not depend on how the stream was split: the same input
//!   pushed whole gives the same sequence (up to the first STARTTLS, after which the
//!   session drops whatever was buffered, on purpose).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use mailman::smtp::{Action, AuthOutcome, AuthPolicy, Session, SessionConfig, Step};

const MAX_MESSAGE: usize = 2000;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Reply(String),
    Message(Vec<u8>, Vec<String>),
    StartTls,
    Close,
    Auth(String),
}

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.fuzz.test".into(),
        max_message_size: MAX_MESSAGE,
        max_recipients: 5,
        starttls: true,
        max_errors: 20,
        bare_newline: Default::default(),
        recipient_check: None,
    }
}

fn check_reply(reply: &str) {
    assert!(reply.ends_with("\r\n"), "reply without CRLF: {reply:?}");
    for line in reply[..reply.len() - 2].split("\r\n") {
        let b = line.as_bytes();
        assert!(
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[3], b' ' | b'-'),
            "malformed reply line {line:?}"
        );
        assert!(
            !line.chars().any(char::is_control),
            "control character in reply line {line:?}"
        );
        assert!(line.len() <= 512, "reply line of {} octets", line.len());
    }
}

fn check_body(body: &[u8]) {
    assert!(body.len() <= MAX_MESSAGE, "message over the limit stored");
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && body[i - 1] == b'\r', "bare LF in stored body");
        }
    }
    assert!(
        body.is_empty() || body.ends_with(b"\r\n"),
        "last line without CRLF"
    );
}

/// Runs a session over `input` pushed `chunk` octets at a time; returns what happened.
fn run(input: &[u8], chunk: usize) -> Vec<Event> {
    let mut session = Session::new(config(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    session.set_auth(AuthPolicy {
        offered: true,
        plaintext: true,
        required: false,
    });
    check_reply(&session.greeting());
    let mut chunks = input.chunks(chunk);
    let mut events = Vec::new();
    let mut messages = 0usize;
    // Every step either consumes input or produces a reply for input already consumed;
    // more steps than this means the state machine spins.
    let bound = 4 * input.len() + 64;
    for _ in 0..bound {
        let action = match session.step() {
            Step::Action(action) => action,
            Step::Authenticate(credentials) => {
                let (login, password) = (&credentials.login, &credentials.password);
                assert!(!login.is_empty() && !password.is_empty());
                assert!(!login.contains('\0') && !password.contains('\0'));
                events.push(Event::Auth(login.clone()));
                let outcome = if password == "pw" {
                    AuthOutcome::Accepted { lane: None }
                } else {
                    AuthOutcome::Refused
                };
                session.auth_done(outcome)
            }
        };
        match action {
            Action::Reply(reply) => {
                check_reply(&reply);
                events.push(Event::Reply(reply));
            }
            Action::NeedMore => match chunks.next() {
                Some(bytes) => session.receive(bytes),
                None => return events,
            },
            Action::Message(message) => {
                check_body(&message.body);
                assert!(!message.rcpt_to.is_empty() && message.rcpt_to.len() <= 5);
                for rcpt in &message.rcpt_to {
                    assert!(!rcpt.chars().any(char::is_control), "{rcpt:?}");
                }
                assert!(!message.mail_from.chars().any(char::is_control));
                assert_eq!(
                    message.app.as_ref().map(|app| app.name.as_str()),
                    session.login()
                );
                let header = message.received_header("mx.fuzz.test", "ID", 0);
                assert_eq!(header.matches('\n').count(), header.matches("\r\n").count());
                events.push(Event::Message(message.body, message.rcpt_to));
                messages += 1;
                let reply = if messages % 2 == 1 {
                    "250 2.0.0 Ok: queued\r\n"
                } else {
                    "451 4.3.0 local error\r\n"
                };
                match session.message_done(reply.to_string()) {
                    Action::Reply(r) => events.push(Event::Reply(r)),
                    other => panic!("message_done gave {other:?}"),
                }
            }
            Action::StartTls => {
                events.push(Event::StartTls);
                session.tls_started();
            }
            Action::Close => {
                events.push(Event::Close);
                return events;
            }
        }
    }
    panic!("session made no progress in {bound} steps");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first) + 1;
    let split = run(input, chunk);
    let whole = run(input, input.len().max(1));
    let upto = |events: &[Event]| -> usize {
        events
            .iter()
            .position(|e| *e == Event::StartTls)
            .map_or(events.len(), |i| i + 1)
    };
    let (a, b) = (upto(&split), upto(&whole));
    assert_eq!(
        split[..a],
        whole[..b],
        "pushing in chunks of {chunk} changed the session"
    );
});
