//! The delivery ledger's events through the whole chain (swaks -> mailman -> postoffice ->
//! beanstalkd -> worker -> MX), read from the events tube as the ledger writer would: the
//! post office's `queued` event names mailman's message id (the id in its `Received:` field)
//! and the address swaks connected from, the Message-ID and the decoded Subject; the worker's
//! `sent` event for the recipient follows, with the MX's address.

use std::time::Duration;

use hedwig_queue::event::{Batch, Event, Outcome, What};
use hedwig_queue::Tubes;

use crate::common::{check, clients, Net, Stack, WAIT};

const NET: Net = Net(140);

const MESSAGE: &[u8] = b"From: app@sender.e2e.test\r\n\
To: alice@rcpt.e2e.test\r\n\
Subject: =?utf-8?q?ledger_caf=C3=A9?=\r\n\
Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n\
Message-ID: <ledger-1@sender.e2e.test>\r\n\
\r\n\
hello\r\n";

/// Moves every event now in the events tube into `into`.
async fn drain(url: &str, into: &mut Vec<Event>) {
    let mut c = beanstalk::Client::connect(url.to_owned())
        .await
        .expect("connect to beanstalkd");
    c.watch(Tubes::default().events()).await.expect("watch");
    c.ignore("default").await.expect("ignore");
    for _ in 0..10_000 {
        match c.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                into.extend(Batch::decode(&job.body).expect("a batch").events);
                c.delete(job.id).await.expect("delete");
            }
            Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_sees_the_edge_and_the_delivery() {
    let stack = Stack::start(NET).await;
    let data = MESSAGE.strip_suffix(b"\r\n").expect("ends with CRLF");
    clients::swaks(&stack, &["alice@rcpt.e2e.test"], data).await;
    let got = check::wait_for(&stack.rcpt_mx, 1, "alice@rcpt.e2e.test").await;

    let url = stack.beanstalkd.url();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let sent = |events: &[Event]| {
        events.iter().any(|e| {
            matches!(&e.what, What::Recipient(r) if r.outcome == Outcome::Sent
                && r.recipient == "alice@rcpt.e2e.test")
        })
    };
    while !sent(&events) && tokio::time::Instant::now() < deadline {
        drain(&url, &mut events).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent(&events), "no sent event: {events:#?}");

    let (queue_id, queued) = events
        .iter()
        .find_map(|e| match &e.what {
            What::Queued(q) => Some((e.queue_id.clone(), q)),
            _ => None,
        })
        .expect("a queued event");
    let edge_id = queued.edge_id.as_deref().expect("mailman's message id");
    let delivered = String::from_utf8_lossy(&got[0].data);
    assert!(
        delivered.contains(&format!("(mailman) with ESMTP id {edge_id}")),
        "the id in mailman's Received: field is {edge_id}:\n{delivered}"
    );
    assert_eq!(
        queued.edge_client.as_deref(),
        Some(stack.client_ip().to_string().as_str())
    );
    assert_eq!(
        queued.message_id.as_deref(),
        Some("ledger-1@sender.e2e.test")
    );
    assert_eq!(queued.subject.as_deref(), Some("ledger café"));
    assert_eq!(queued.recipients, ["alice@rcpt.e2e.test"]);
    assert!(queued.post_client.is_some());

    let sent_event = events
        .iter()
        .find_map(|e| match &e.what {
            What::Recipient(r) if r.outcome == Outcome::Sent => Some((e, r)),
            _ => None,
        })
        .expect("sent");
    assert_eq!(sent_event.0.queue_id, queue_id, "one message, one queue id");
    assert_eq!(
        sent_event.1.ip.as_deref(),
        Some(stack.net.rcpt_mx().to_string().as_str())
    );
    assert_eq!(sent_event.1.attempt, Some(1));
}
