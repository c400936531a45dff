//! A recipient the remote server rejects (550) bounces back to the sender, through the whole
//! chain: msmtp → mailman → postoffice → worker → the recipients' MX answers 550 for one
//! recipient and 250 for the other → the worker records the failure and queues an RFC 3464
//! DSN → the worker delivers it from the null sender to the MX of the sender's own domain.
//! The accepted recipient gets the message exactly once; the bounce names only the rejected
//! one and carries the original message's header.

use crate::common::{check, clients, Net, Stack, RELAY_HOSTNAME, SENDER, WAIT};
use hedwig_testkit::smtp::Behaviour;

const NET: Net = Net(65);

const REJECT: &str = "550 5.1.1 <nobody@rcpt.e2e.test>: no such user here";

const MESSAGE: &str = "From: App <app@sender.e2e.test>\r\n\
To: alice@rcpt.e2e.test, nobody@rcpt.e2e.test\r\n\
Subject: one of you does not exist\r\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <bounce-1@sender.e2e.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Hallo, wer ist da? — 👻\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_recipient_bounces_to_the_sender() {
    let stack = Stack::start_with(NET, Behaviour::new().rcpt("nobody@rcpt.e2e.test", REJECT)).await;
    clients::msmtp(
        &stack,
        &["--", "alice@rcpt.e2e.test", "nobody@rcpt.e2e.test"],
        MESSAGE.as_bytes(),
    )
    .await;

    // The accepted recipient.
    let got = check::wait_for(&stack.rcpt_mx, 1, "the recipients' MX").await;
    assert_eq!(got[0].mail_from, SENDER);
    assert_eq!(got[0].rcpt_to, ["alice@rcpt.e2e.test"]);
    let parts = check::split(&got[0].data);
    check::assert_bytes_eq(parts.message, MESSAGE.as_bytes(), "the message");

    // The bounce, at the sender's MX, from the null sender (RFC 5321 §4.5.5).
    let bounces = check::wait_for(&stack.sender_mx, 1, "the sender's MX").await;
    let bounce = &bounces[0];
    assert_eq!(bounce.mail_from, "", "a bounce comes from the null sender");
    assert_eq!(bounce.rcpt_to, [SENDER]);
    assert_eq!(bounce.helo, RELAY_HOSTNAME);
    check::assert_dsn(
        &bounce.data,
        "nobody@rcpt.e2e.test",
        "5.1.1",
        "no such user here",
        &["alice@rcpt.e2e.test"],
    );
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(
        text.contains("Message-ID: <bounce-1@sender.e2e.test>"),
        "the bounce carries the original header:\n{text}"
    );

    // Nothing more is on its way: exactly one copy each, and one record in the failed tube.
    stack.wait_settled(WAIT).await;
    assert_eq!(
        stack.rcpt_mx.received().len(),
        1,
        "alice got it exactly once"
    );
    assert_eq!(stack.sender_mx.received().len(), 1, "exactly one bounce");
    assert_eq!(stack.jobs_in(hedwig_queue::tubes::TUBE_FAILED).await, 1);
    stack.stop().await;
}
