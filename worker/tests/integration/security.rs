//! Security review (issue 8), defence in depth: a job put into beanstalkd by someone else
//! (not through the post office, which refuses such addresses with 400) whose envelope holds a
//! CR, LF or NUL never gets those bytes onto an SMTP connection. The bad addresses end in the
//! failed tube with reason `bad-address`; the receiver sees only well-formed commands.

use crate::common;

use std::time::Duration;

use hedwig_queue::job::Kind;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};

/// Every failed-tube record that arrives within `quiet` of the previous one.
async fn drain_failed(beanstalkd: &str, first_wait: Duration) -> Vec<hedwig_queue::job::Job> {
    let mut records = Vec::new();
    let mut wait = first_wait;
    for _ in 0..100 {
        match common::next_failed(beanstalkd, wait).await {
            Some(job) => records.push(job),
            None => break,
        }
        wait = Duration::from_secs(1);
    }
    records
}

/// Commands the worker may legitimately send for `from` → `to`.
fn assert_only_clean_commands(mx: &SmtpReceiver, from: &str, to: &[&str]) {
    let commands = mx.commands();
    assert!(!commands.is_empty());
    for command in &commands {
        let ok = command.starts_with("EHLO relay.hedwig.test")
            || command.starts_with(&format!("MAIL FROM:<{from}>"))
            || to.iter().any(|r| command == &format!("RCPT TO:<{r}>"))
            || ["DATA", "QUIT", "RSET", "NOOP"].contains(&command.as_str());
        assert!(ok, "unexpected command {command:?} in {commands:?}");
        assert!(!command.contains("victim"), "{commands:?}");
    }
}

#[tokio::test]
async fn control_characters_in_an_envelope_never_reach_a_server() {
    let bs = hedwig_testkit::Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("inject.test", 10, "mx.inject.test")
            .a("mx.inject.test", "127.0.4.210")
            .mx("sender-inject.test", 10, "mx.sender-inject.test")
            .a("mx.sender-inject.test", "127.0.4.211"),
    )
    .await;
    let mx = common::mx("127.0.4.210", Behaviour::new()).await;
    let sender_mx = common::mx("127.0.4.211", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    // No bounces: the failed tube then holds exactly the records of these two jobs.
    config.bounces = false;
    let worker = common::start(config);

    // Recipients: one good one and hostile ones. The ones with the line break at an end used
    // to pass (the parser trimmed it), and a non-ASCII local part goes on the wire as written.
    let hostile = [
        "j\u{f6}rg@inject.test\r\n",
        "\r\nj\u{f6}rg@inject.test",
        "plain@inject.test\n",
        "evil@inject.test\r\nRCPT TO:<victim@inject.test>",
        "evil@inject.test>\r\nRSET",
        "nul\0@inject.test",
        "\"quoted\r\nvictim\"@inject.test",
    ];
    let mut rcpts = vec!["good@inject.test"];
    rcpts.extend(hostile);
    common::enqueue(
        &bs.url(),
        &common::job("s@sender.test", &rcpts, &common::message("inject-rcpt")),
    )
    .await;
    // A sender that would break MAIL FROM: nobody gets anything from this job.
    common::enqueue(
        &bs.url(),
        &common::job(
            "j\u{f6}rg@sender.test\r\n",
            &["ann@sender-inject.test"],
            &common::message("inject-sender"),
        ),
    )
    .await;

    let received = mx
        .wait_for(1, Duration::from_secs(15))
        .await
        .expect("the good recipient gets the message");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, vec!["good@inject.test"]);
    assert_eq!(received[0].mail_from, "s@sender.test");

    let records = drain_failed(&bs.url(), Duration::from_secs(15)).await;
    let mut failed: Vec<String> = Vec::new();
    for record in &records {
        assert_eq!(record.envelope.kind, Kind::Message);
        let failure = record.envelope.failure.as_ref().expect("a failure");
        assert_eq!(failure.reason, "bad-address", "{failure:?}");
        assert!(
            failure.response.contains("control character"),
            "{failure:?}"
        );
        assert!(failure.relay.is_none(), "no server was asked: {failure:?}");
        failed.extend(record.envelope.rcpt_to.iter().map(|r| r.to_string()));
    }
    failed.sort();
    let mut expected: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
    expected.push("ann@sender-inject.test".into());
    expected.sort();
    assert_eq!(
        failed, expected,
        "every hostile address failed, nothing else"
    );
    let sender_record = records
        .iter()
        .find(|r| r.envelope.rcpt_to == ["ann@sender-inject.test"])
        .unwrap();
    assert!(
        sender_record
            .envelope
            .failure
            .as_ref()
            .unwrap()
            .response
            .contains("sender"),
        "{:?}",
        sender_record.envelope.failure
    );

    assert_only_clean_commands(&mx, "s@sender.test", &["good@inject.test"]);
    assert_eq!(
        sender_mx.connections(),
        0,
        "the bad sender's job never connected"
    );
    assert!(
        common::wait_tube_empty(
            &bs.url(),
            hedwig_queue::tubes::TUBE_OUTBOUND,
            Duration::from_secs(5)
        )
        .await
    );
    worker.stop().await;
}
