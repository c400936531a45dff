//! PHP `mail()` with `sendmail_path = msmtp -t ...` (the php.ini line of the deployment):
//! `mail()` returns true and the message arrives, signed and traced.
//!
//! PHP builds the message itself: `To:` and `Subject:` from its arguments, then the extra
//! headers (PHP 8 separates header lines with CRLF), a blank line, the body and one more line
//! end (PHP adds it; the body as a script writes it has LF line ends). msmtp sends every line
//! end as CRLF. So what arrives is exactly that message with LF → CRLF: the body the script
//! passed, 8-bit UTF-8 included, plus PHP's one extra empty line.

use std::net::{IpAddr, SocketAddr};

use crate::common::clients::PhpMail;
use crate::common::{check, clients, Net, Stack, CLIENT_HELO, RELAY_HOSTNAME, SENDER, WAIT};

const NET: Net = Net(63);

const TO: &str = "alice@rcpt.e2e.test";
const SUBJECT: &str = "=?UTF-8?B?R3LDvMOfZQ==?= from PHP";

const BODY: &str = "Hallo Welt! Größe: 10 m² — ½ ¼ ¾\n\
こんにちは世界\n\
.dot at the start\n\
\n\
-- \n\
PHP\n";

const HEADERS: &str = "From: App <app@sender.e2e.test>\r\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <php-mail-1@sender.e2e.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit";

/// The control: with nothing listening where `sendmail_path` points, msmtp fails and `mail()`
/// returns false, so the `true` above means mailman took the message.
#[tokio::test]
async fn php_mail_returns_false_when_mailman_is_unreachable() {
    let ip = NET.ip(10);
    let closed = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let options = clients::msmtp_options_to(closed, IpAddr::V4(NET.client()));
    let mail = PhpMail {
        to: TO,
        subject: SUBJECT,
        body: BODY,
        headers: HEADERS,
    };
    assert!(!clients::php_mail_via(&options, &mail).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_mail_returns_true_and_the_mail_arrives() {
    let stack = Stack::start(NET).await;
    let sent = clients::php_mail(
        &stack,
        &PhpMail {
            to: TO,
            subject: SUBJECT,
            body: BODY,
            headers: HEADERS,
        },
    )
    .await;
    assert!(sent, "mail() returned false");

    let got = check::wait_for(&stack.rcpt_mx, 1, "the recipient's MX").await;
    let delivered = &got[0];
    assert_eq!(delivered.mail_from, SENDER);
    assert_eq!(delivered.rcpt_to, ["alice@rcpt.e2e.test"]);
    assert_eq!(delivered.helo, RELAY_HOSTNAME);
    let parts = check::split(&delivered.data);
    check::assert_received(
        &parts.received,
        CLIENT_HELO,
        stack.client_ip(),
        Some("alice@rcpt.e2e.test"),
    );
    // PHP writes `To:`, `Subject:`, the extra headers, a blank line, the body and one more
    // line end; msmtp sends every line end as CRLF.
    let expected = format!("To: {TO}\nSubject: {SUBJECT}\n{HEADERS}\n\n{BODY}\n")
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    check::assert_bytes_eq(parts.message, expected.as_bytes(), "the message");
    check::assert_dkim_passes(&stack.dns, &delivered.data).await;

    stack.wait_settled(WAIT).await;
    assert_eq!(stack.rcpt_mx.received().len(), 1, "delivered exactly once");
    assert!(stack.sender_mx.received().is_empty(), "no bounce");
    stack.stop().await;
}
