//! SMTP transparency (RFC 5321 §4.5.2), as a property: whatever message the worker sends, the
//! receiving server stores the same bytes.
//!
//! The client side is the worker's DATA encoding: `hedwig_message::smtp_form` (every line
//! ends in CRLF: a bare LF or bare CR becomes CRLF; lines over 998 octets are folded) and then
//! `worker::smtp::session::dot_stuff` (a leading `.` doubled, CRLF added when the message does
//! not end with one, `.` CRLF). The server side is mailman's SMTP state machine
//! (`mailman::smtp::Session`), fed the whole SMTP session split at random points, and the
//! testkit `SmtpReceiver`'s DATA reader (`hedwig_testkit::smtp::read_data`), which the
//! end-to-end tests rely on to see what the worker delivered.
//!
//! Properties:
//! - any bytes (leading dots, bare CR, bare LF, CRLF.CRLF inside, NUL, 8-bit, no final line
//!   break) come back equal to `smtp_form(message)` with a final CRLF added if it lacks one:
//!   that is the documented normalisation, and the only change;
//! - a message that already has CRLF line ends and short lines comes back identical (plus the
//!   final CRLF if missing): `smtp_form` leaves it alone, and stuffing/unstuffing is exact;
//! - the end of DATA is found exactly where the client put it: the `QUIT` that follows gets
//!   its `221`, nothing of the message is read as a command.

use std::net::{IpAddr, Ipv4Addr};

use mailman::smtp::{Action, Session, SessionConfig};
use proptest::prelude::*;
use worker::smtp::session::dot_stuff;

/// What the worker puts on the wire between `DATA` and the server's final reply.
fn client_data(message: &[u8]) -> Vec<u8> {
    let wire = hedwig_message::smtp_form(message);
    let mut out = Vec::new();
    dot_stuff(&wire, &mut out);
    out
}

/// The documented normalisation: `smtp_form`, then a final CRLF if the message lacks one.
fn normalised(message: &[u8]) -> Vec<u8> {
    let mut out = hedwig_message::smtp_form(message).into_owned();
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs a whole session through mailman's state machine, pushing the client's bytes in the
/// given chunk sizes (cycled); returns the one message received.
fn server_receives(data: &[u8], chunks: &[usize]) -> Vec<u8> {
    let config = SessionConfig {
        hostname: "mx.transparency.test".into(),
        max_message_size: 1 << 20,
        max_recipients: 10,
        starttls: false,
        max_errors: 3,
        bare_newline: Default::default(),
        recipient_check: None,
    };
    let mut session = Session::new(config, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut stream =
        b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@server.test>\r\nDATA\r\n"
            .to_vec();
    stream.extend_from_slice(data);
    stream.extend_from_slice(b"QUIT\r\n");

    let mut rest = &stream[..];
    let mut sizes = chunks.iter().cycle();
    let mut codes = Vec::new();
    let mut body = None;
    for _ in 0..10 * stream.len() + 100 {
        match session.next() {
            Action::Reply(reply) => codes.push(reply[..3].to_string()),
            Action::NeedMore => {
                assert!(!rest.is_empty(), "session wants more after QUIT: {codes:?}");
                let n = (*sizes.next().unwrap()).clamp(1, rest.len());
                session.receive(&rest[..n]);
                rest = &rest[n..];
            }
            Action::Message(message) => {
                assert!(body.is_none(), "two messages");
                body = Some(message.body);
                match session.message_done("250 2.0.0 Ok\r\n".into()) {
                    Action::Reply(reply) => codes.push(reply[..3].to_string()),
                    other => panic!("{other:?}"),
                }
            }
            Action::Close => {
                assert_eq!(codes, ["250", "250", "250", "354", "250", "221"]);
                assert!(rest.is_empty(), "closed with input left");
                return body.expect("a message");
            }
            Action::StartTls => panic!("no STARTTLS here"),
        }
    }
    panic!("session did not finish: {codes:?}");
}

/// The testkit receiver's reading of the client's DATA bytes, split the same way; it must
/// find the end exactly at the end.
fn testkit_receives(data: &[u8], chunks: &[usize]) -> Vec<u8> {
    let mut pieces = Vec::new();
    let mut rest = data;
    for &n in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = n.clamp(1, rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    let (body, end) = hedwig_testkit::smtp::read_data(&pieces);
    assert_eq!(end, Some(data.len()), "end of DATA not at the end");
    body
}

/// Bytes with the interesting ones (`.`, CR, LF) common.
fn message_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'.'),
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        4 => Just(b'a'),
        1 => Just(b' '),
        1 => Just(0u8),
        2 => any::<u8>(),
    ];
    let piece = prop_oneof![
        6 => byte.prop_map(|b| vec![b]),
        1 => Just(b"\r\n.\r\n".to_vec()),
        1 => Just(b"\r\n..\r\n".to_vec()),
        1 => Just(b"\n.\n".to_vec()),
        1 => Just(b"\r\n.".to_vec()),
        1 => Just(b".\r\n".to_vec()),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

/// CRLF-terminated lines of up to 998 octets without CR or LF (some starting with dots).
fn crlf_message() -> impl Strategy<Value = Vec<u8>> {
    let line = prop::collection::vec(
        prop_oneof![3 => Just(b'.'), 6 => any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n')],
        0..40,
    );
    (prop::collection::vec(line, 0..20), any::<bool>()).prop_map(|(lines, last_break)| {
        let mut out = lines.join(&b"\r\n"[..]);
        if last_break && !out.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out
    })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..64, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn any_bytes_round_trip_up_to_smtp_form(message in message_bytes(300), chunks in chunk_sizes()) {
        let data = client_data(&message);
        let expected = normalised(&message);
        prop_assert_eq!(&server_receives(&data, &chunks), &expected);
        prop_assert_eq!(&testkit_receives(&data, &chunks), &expected);
    }

    #[test]
    fn crlf_messages_round_trip_exactly(message in crlf_message(), chunks in chunk_sizes()) {
        let data = client_data(&message);
        let mut expected = message.clone();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        prop_assert_eq!(&server_receives(&data, &chunks), &expected);
        prop_assert_eq!(&testkit_receives(&data, &chunks), &expected);
    }
}

#[test]
fn long_lines_are_folded_not_lost() {
    let mut message = vec![b'.'; 2500];
    message.extend_from_slice(b"\r\n.\r\n");
    let received = server_receives(&client_data(&message), &[7]);
    assert_eq!(received, normalised(&message));
    assert_eq!(
        received.iter().filter(|&&b| b == b'.').count(),
        2501,
        "every dot arrives"
    );
}
