//! The postoffice is down: msmtp still gets its 250 from mailman, which keeps the message in
//! its spool and retries; nothing reaches the recipient meanwhile. The postoffice comes back
//! on the same address, and the message arrives exactly once, unchanged.

use std::time::Duration;

use crate::common::{check, clients, Net, Stack, CLIENT_HELO, SENDER, WAIT};

const NET: Net = Net(66);

fn message(n: u32) -> String {
    format!(
        "From: App <app@sender.e2e.test>\r\n\
To: alice@rcpt.e2e.test\r\n\
Subject: outage test {n}\r\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <outage-{n}@sender.e2e.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Message {n}: still here after the outage — ✓\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postoffice_down_then_back_delivers_once() {
    let mut stack = Stack::start(NET).await;

    // Before the outage: the normal path.
    clients::msmtp(
        &stack,
        &["--", "alice@rcpt.e2e.test"],
        message(1).as_bytes(),
    )
    .await;
    check::wait_for(&stack.rcpt_mx, 1, "before the outage").await;

    stack.stop_postoffice().await;
    // msmtp exits 0 only after mailman's 250 to the final dot.
    clients::msmtp(
        &stack,
        &["--", "alice@rcpt.e2e.test"],
        message(2).as_bytes(),
    )
    .await;
    assert_eq!(stack.mailman.spooled(), 1, "mailman holds the message");
    // A few of mailman's retries (every 200-500 ms) fail meanwhile; nothing moves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        stack.mailman.spooled(),
        1,
        "still spooled while the postoffice is down"
    );
    assert_eq!(stack.rcpt_mx.received().len(), 1, "nothing new arrived");

    stack.start_postoffice().await;
    let got = check::wait_for(&stack.rcpt_mx, 2, "after the outage").await;
    let delivered = &got[1];
    assert_eq!(delivered.mail_from, SENDER);
    assert_eq!(delivered.rcpt_to, ["alice@rcpt.e2e.test"]);
    let parts = check::split(&delivered.data);
    check::assert_bytes_eq(parts.message, message(2).as_bytes(), "the spooled message");
    check::assert_received(
        &parts.received,
        CLIENT_HELO,
        stack.client_ip(),
        Some("alice@rcpt.e2e.test"),
    );
    check::assert_dkim_passes(&stack.dns, &delivered.data).await;

    stack.wait_settled(WAIT).await;
    let all = stack.rcpt_mx.received();
    assert_eq!(all.len(), 2, "each message exactly once");
    for (i, r) in all.iter().enumerate() {
        let want = message(i as u32 + 1);
        check::assert_bytes_eq(check::split(&r.data).message, want.as_bytes(), "in order");
    }
    assert!(stack.sender_mx.received().is_empty(), "no bounce");
    stack.stop().await;
}
