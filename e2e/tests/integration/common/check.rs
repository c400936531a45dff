//! Checks on what a receiver got: the message taken apart into the worker's DKIM-Signature
//! fields, mailman's `Received:` field and the bytes the client sent; mailman's trace header;
//! DKIM verified by an independent verifier (python3-dkim, the helper in
//! `message/tests/dkim_verify.py`) against the test DNS server; and RFC 3464 bounces.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Received, SmtpReceiver};
use mail_parser::{MessageParser, MimeHeaders};

use super::{MAILMAN_FQDN, SENDER_DOMAIN, WAIT};

/// A delivered message, taken apart.
#[derive(Debug)]
pub struct Delivered<'a> {
    /// The `DKIM-Signature:` fields the worker put in front (folded, CRLF-terminated).
    pub dkim_signatures: Vec<String>,
    /// mailman's `Received:` field (folded, CRLF-terminated).
    pub received: String,
    /// Everything after it: what the client sent.
    pub message: &'a [u8],
}

/// The header field `name` at the start of `data` (with its folded continuation lines and
/// the final CRLF), and the rest; `None` when `data` does not start with that field.
fn take_field<'a>(data: &'a [u8], name: &str) -> Option<(String, &'a [u8])> {
    let prefix = format!("{name}:");
    if data.len() < prefix.len() || !data[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    let mut from = 0;
    while let Some(pos) = data[from..].windows(2).position(|w| w == b"\r\n") {
        let end = from + pos + 2;
        match data.get(end) {
            // RFC 5322 §2.2.3: a line starting with WSP continues the field.
            Some(b' ') | Some(b'\t') => from = end,
            _ => {
                let field = String::from_utf8_lossy(&data[..end]).into_owned();
                return Some((field, &data[end..]));
            }
        }
    }
    None
}

/// Splits a delivered message; panics (showing it) unless it is DKIM-Signature fields, one
/// `Received:` field and the rest.
pub fn split(data: &[u8]) -> Delivered<'_> {
    let mut rest = data;
    let mut dkim_signatures = Vec::new();
    while let Some((field, after)) = take_field(rest, "DKIM-Signature") {
        dkim_signatures.push(field);
        rest = after;
    }
    let (received, message) = take_field(rest, "Received").unwrap_or_else(|| {
        panic!(
            "no Received: after the signatures in\n{}",
            String::from_utf8_lossy(data)
        )
    });
    Delivered {
        dkim_signatures,
        received,
        message,
    }
}

/// Asserts two byte strings are equal, showing both as text when they are not.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what} differs\n--- got ({} bytes):\n{:?}\n--- want ({} bytes):\n{:?}",
        got.len(),
        String::from_utf8_lossy(got),
        want.len(),
        String::from_utf8_lossy(want)
    );
}

/// Checks mailman's trace field (RFC 5321 §4.4): it names the client's HELO and address and
/// mailman's fqdn, has an id, a `for` clause when (and only when) there was one recipient,
/// and a date that parses; mail-parser must read it as a Received field with those parts.
pub fn assert_received(received: &str, helo: &str, client: IpAddr, single_rcpt: Option<&str>) {
    let head = format!(
        "Received: from {helo} ([{client}])\r\n\tby {MAILMAN_FQDN} (mailman) with ESMTP id "
    );
    assert!(
        received.starts_with(&head),
        "mailman's Received: {received:?} does not start with {head:?}"
    );
    let after_id = &received[head.len()..];
    let id_end = after_id
        .find([';', '\r'])
        .unwrap_or_else(|| panic!("no end of the id in {received:?}"));
    let id = &after_id[..id_end];
    assert!(
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
        "id {id:?} in {received:?}"
    );
    let tail = &after_id[id_end..];
    let date = match single_rcpt {
        Some(rcpt) => tail.strip_prefix(&format!("\r\n\tfor <{rcpt}>;\r\n\t")),
        None => tail.strip_prefix(";\r\n\t"),
    }
    .unwrap_or_else(|| panic!("unexpected tail {tail:?} of {received:?} (for {single_rcpt:?})"));
    let date = date.strip_suffix("\r\n").expect("the field ends with CRLF");
    // An independent reading of the whole field.
    let field = format!("{received}\r\n");
    let parsed = MessageParser::default()
        .parse(field.as_bytes())
        .expect("the Received field parses");
    let trace = parsed
        .received()
        .expect("mail-parser sees a Received field");
    let by = trace.by.as_ref().map(|h| h.to_string());
    assert_eq!(by.as_deref(), Some(MAILMAN_FQDN), "by in {received:?}");
    let from = trace.from.as_ref().map(|h| h.to_string());
    assert_eq!(from.as_deref(), Some(helo), "from in {received:?}");
    assert_eq!(trace.id.as_deref(), Some(id), "id in {received:?}");
    let when = trace
        .date
        .unwrap_or_else(|| panic!("no parsable date {date:?} in {received:?}"));
    let age = hedwig_core::unix_now() as i64 - when.to_timestamp();
    assert!(
        (-5..300).contains(&age),
        "the date {date:?} is {age} s old: not the time of sending"
    );
}

/// The verdict of python3-dkim on `message`: one line per signature,
/// `<index> <d> <s> <a> pass|fail`, and whether all passed.
pub async fn verify_dkim(dns: &DnsServer, message: &[u8]) -> (bool, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("message.eml");
    std::fs::write(&path, message).expect("write the message");
    // The helper lives with the DKIM signer's own tests (hedwig-message); it asks only the
    // DNS server it is given.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../message/tests/dkim_verify.py");
    let run = tokio::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(dns.addr().ip().to_string())
        .arg(dns.addr().port().to_string())
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the DKIM verifier finishes within 30 s")
        .expect("/usr/bin/python3 runs (apt-get install python3-dkim python3-dnspython)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "dkim verifier: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        out.status.success(),
        stdout.lines().map(str::to_string).collect(),
    )
}

/// Asserts that both the RSA and the Ed25519 signatures of the sender's domain verify.
pub async fn assert_dkim_passes(dns: &DnsServer, message: &[u8]) {
    let (passed, lines) = verify_dkim(dns, message).await;
    let want = vec![
        format!("0 {SENDER_DOMAIN} rsa rsa-sha256 pass"),
        format!("1 {SENDER_DOMAIN} ed ed25519-sha256 pass"),
    ];
    assert!(passed, "DKIM verification failed: {lines:?}");
    assert_eq!(lines, want);
}

/// Waits (bounded) for exactly `n` messages at `receiver` and returns them.
pub async fn wait_for(receiver: &SmtpReceiver, n: usize, what: &str) -> Vec<Received> {
    let got = receiver.wait_for(n, WAIT).await.unwrap_or_else(|| {
        panic!(
            "{what}: {n} message(s) not received within {WAIT:?}; got {}; commands: {:?}",
            receiver.received().len(),
            receiver.commands()
        )
    });
    assert_eq!(got.len(), n, "{what}: more messages than expected");
    got
}

/// Checks that `data` is an RFC 3464 bounce for `rejected` (and for no one in `accepted`):
/// `multipart/report; report-type=delivery-status`, a human-readable first part, a
/// `message/delivery-status` part whose per-recipient fields name the recipient, `Action:
/// failed`, the status and the remote server's reply.
pub fn assert_dsn(data: &[u8], rejected: &str, status: &str, reply: &str, accepted: &[&str]) {
    let text = String::from_utf8_lossy(data);
    let message = MessageParser::default()
        .parse(data)
        .unwrap_or_else(|| panic!("the bounce parses:\n{text}"));
    let ctype = message
        .content_type()
        .unwrap_or_else(|| panic!("a Content-Type in\n{text}"));
    assert_eq!(
        (ctype.ctype(), ctype.subtype()),
        ("multipart", Some("report")),
        "{text}"
    );
    assert_eq!(
        ctype.attribute("report-type"),
        Some("delivery-status"),
        "{text}"
    );
    let status_part = message
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .unwrap_or_else(|| panic!("no message/delivery-status part in\n{text}"));
    let fields = String::from_utf8_lossy(status_part.contents()).into_owned();
    // RFC 3464 §2.2 / §2.3: per-message fields, a blank line, then one group per recipient.
    let groups: Vec<&str> = fields
        .split("\r\n\r\n")
        .flat_map(|g| g.split("\n\n"))
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    assert!(
        groups.len() >= 2,
        "per-message and per-recipient groups in {fields:?}"
    );
    assert!(
        groups[0].to_ascii_lowercase().contains("reporting-mta:"),
        "Reporting-MTA in {fields:?}"
    );
    let recipients = &groups[1..];
    assert_eq!(
        recipients.len(),
        1,
        "exactly one failed recipient in {fields:?}"
    );
    let group = recipients[0];
    let field = |name: &str| {
        group
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name}: in {group:?}"))
    };
    assert_eq!(
        field("Final-Recipient").to_ascii_lowercase(),
        format!("rfc822; {rejected}"),
        "{group}"
    );
    assert_eq!(field("Action"), "failed", "{group}");
    assert_eq!(field("Status"), status, "{group}");
    let diagnostic = field("Diagnostic-Code");
    assert!(
        diagnostic.to_ascii_lowercase().starts_with("smtp;") && diagnostic.contains(reply),
        "Diagnostic-Code {diagnostic:?} names {reply:?}"
    );
    for ok in accepted {
        assert!(
            !fields.contains(ok),
            "accepted recipient {ok} named as failed in {fields:?}"
        );
    }
}
