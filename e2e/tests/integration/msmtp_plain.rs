//! msmtp with the recipient on its command line → mailman → postoffice → beanstalkd → worker →
//! MX lookup → the recipient's MX. The message arrives byte for byte as msmtp was given it
//! (CRLF input, 8-bit UTF-8 body, a dot-stuffed line), behind mailman's `Received:` field and
//! the worker's two DKIM signatures, which python3-dkim verifies against the test DNS (and
//! rejects once a body byte is changed).

use hedwig_testkit::dns::RecordType;

use crate::common::{check, clients, Net, Stack, CLIENT_HELO, RELAY_HOSTNAME, SENDER, WAIT};

const NET: Net = Net(61);

const MESSAGE: &str = "From: App <app@sender.e2e.test>\r\n\
To: Alice <alice@rcpt.e2e.test>\r\n\
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from msmtp\r\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <msmtp-plain-1@sender.e2e.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Grüße aus Köln — 日本語 ✉\r\n\
.a line that starts with a dot\r\n\
.\r\n\
trailing spaces   \r\n\
\r\n\
last line\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_plain_arrives_signed_and_traced() {
    let stack = Stack::start(NET).await;
    clients::msmtp(&stack, &["--", "alice@rcpt.e2e.test"], MESSAGE.as_bytes()).await;

    let got = check::wait_for(&stack.rcpt_mx, 1, "the recipient's MX").await;
    let delivered = &got[0];
    assert_eq!(delivered.mail_from, SENDER);
    assert_eq!(delivered.rcpt_to, ["alice@rcpt.e2e.test"]);
    assert_eq!(delivered.helo, RELAY_HOSTNAME);
    // RFC 6152: an 8-bit body is announced to a server that offers 8BITMIME.
    assert!(
        delivered.mail_params.contains("BODY=8BITMIME"),
        "MAIL FROM parameters {:?}",
        delivered.mail_params
    );
    let parts = check::split(&delivered.data);
    check::assert_bytes_eq(parts.message, MESSAGE.as_bytes(), "the message msmtp sent");
    check::assert_received(
        &parts.received,
        CLIENT_HELO,
        stack.client_ip(),
        Some("alice@rcpt.e2e.test"),
    );
    assert_eq!(
        parts.dkim_signatures.len(),
        2,
        "{:?}",
        parts.dkim_signatures
    );
    check::assert_dkim_passes(&stack.dns, &delivered.data).await;

    // The verifier is not a rubber stamp: one changed body byte fails both signatures.
    let text = String::from_utf8(delivered.data.clone()).expect("UTF-8");
    let tampered = text.replacen("Köln", "Koln", 1);
    assert_ne!(tampered, text);
    let (passed, lines) = check::verify_dkim(&stack.dns, tampered.as_bytes()).await;
    assert!(!passed, "a tampered body must fail: {lines:?}");

    // The worker found the MX through the test DNS (nothing else knows 127.0.61.2).
    let asked = stack.dns.queries();
    assert!(
        asked
            .iter()
            .any(|(name, kind)| name == "rcpt.e2e.test." && *kind == RecordType::MX),
        "no MX query for rcpt.e2e.test: {asked:?}"
    );

    stack.wait_settled(WAIT).await;
    assert_eq!(stack.rcpt_mx.received().len(), 1, "delivered exactly once");
    assert!(stack.sender_mx.received().is_empty(), "no bounce");
    stack.stop().await;
}
