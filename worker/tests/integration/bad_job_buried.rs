//! A job body that is not a hedwig job is buried for an operator, never deleted, and the
//! worker carries on with the next job.

use crate::common;

use std::time::Duration;

use beanstalk::Client;
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn garbage_is_buried_and_the_next_job_delivered() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.130"),
    )
    .await;
    let mx = common::mx("127.0.4.130", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.concurrency = 1;
    let worker = common::start(config);
    let mut c = Client::connect(bs.url()).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    c.put(
        b"this is not a job",
        1024,
        Duration::ZERO,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    common::enqueue(
        &bs.url(),
        &common::job(
            "s@sender.test",
            &["a@example.test"],
            &common::message("after"),
        ),
    )
    .await;
    assert!(mx.wait_for(1, Duration::from_secs(10)).await.is_some());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counts = common::tube_counts(&bs.url(), TUBE_OUTBOUND).await;
        if counts == (0, 0, 0, 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let buried = c.peek_buried().await.unwrap();
    assert_eq!(&buried.body[..], b"this is not a job");
    worker.stop().await;
}

#[tokio::test]
async fn a_sender_that_would_inject_commands_is_never_sent() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.131"),
    )
    .await;
    let mx = common::mx("127.0.4.131", Behaviour::new()).await;
    let worker = common::start(common::config(&bs.url(), dns.addr()));
    common::enqueue(
        &bs.url(),
        &common::job(
            "a@b.test>\r\nRCPT TO:<victim@example.test",
            &["a@example.test"],
            &common::message("inject"),
        ),
    )
    .await;
    let failed = common::next_failed(&bs.url(), Duration::from_secs(10))
        .await
        .expect("failed record");
    assert_eq!(failed.envelope.failure.unwrap().reason, "bad-address");
    assert_eq!(failed.envelope.kind, hedwig_queue::job::Kind::Message);
    // No bounce to such a "sender" either.
    assert!(common::next_failed(&bs.url(), Duration::from_millis(500))
        .await
        .is_none());
    assert!(
        common::wait_tube_empty(
            &bs.url(),
            hedwig_queue::tubes::TUBE_OUTBOUND,
            Duration::from_secs(5)
        )
        .await
    );
    assert_eq!(mx.connections(), 0);
    worker.stop().await;
}
