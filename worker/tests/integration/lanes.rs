//! Lanes at the worker (issue 17): a job's lane sets its retry schedule and lifetime; a
//! transactional message expires (reason `expired`, a bounce) while a bulk one to the same
//! busy server is still being retried; a job without a lane (an older post office) is in
//! the default lane; a lane the worker does not know is delivered as the default one; the
//! lane's retries are put at the back of the lane.

use crate::common;

use std::time::{Duration, Instant};

use hedwig_queue::lane::LaneRetry;
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn the_lane_decides_lifetime_and_retry_priority() {
    let bs = Beanstalkd::start_on("127.0.160.60".parse().unwrap());
    let dns = DnsServer::start(
        Zone::new()
            .mx("busy.test", 10, "mx.busy.test")
            .a("mx.busy.test", "127.0.160.61")
            .mx("ok.test", 10, "mx.ok.test")
            .a("mx.ok.test", "127.0.160.62")
            .mx("sender.test", 10, "mx.sender.test")
            .a("mx.sender.test", "127.0.160.63"),
    )
    .await;
    let busy = common::mx(
        "127.0.160.61",
        Behaviour::new().rcpt_default("452 4.2.2 mailbox full"),
    )
    .await;
    let ok = common::mx("127.0.160.62", Behaviour::new()).await;
    let sender_mx = common::mx("127.0.160.63", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    // bulk (the default lane) keeps the worker's retry: an hour. transactional: 2 s.
    config
        .lanes
        .get_mut("transactional")
        .expect("a default lane")
        .retry = LaneRetry {
        first: Some(Duration::from_secs(1)),
        max_delay: Some(Duration::from_secs(1)),
        max_lifetime: Some(Duration::from_secs(2)),
    };
    let worker = common::start(config);

    let mut transactional = common::job(
        "sender@sender.test",
        &["full@busy.test"],
        &common::message("reset"),
    );
    transactional.envelope.lane = Some("transactional".into());
    // From a post office before lanes: no lane field at all.
    let old = common::job(
        "sender@sender.test",
        &["full2@busy.test"],
        &common::message("digest"),
    );
    assert!(!String::from_utf8_lossy(&old.encode()).contains("\"lane\""));
    let mut future = common::job(
        "sender@sender.test",
        &["someone@ok.test"],
        &common::message("future"),
    );
    future.envelope.lane = Some("from-a-newer-post-office".into());
    for job in [&transactional, &old, &future] {
        common::enqueue(&bs.url(), job).await;
    }

    let failed = common::next_failed(&bs.url(), Duration::from_secs(20))
        .await
        .expect("the transactional message expires");
    assert_eq!(failed.envelope.queue_id, transactional.envelope.queue_id);
    assert_eq!(failed.envelope.failure.as_ref().unwrap().reason, "expired");
    assert_eq!(failed.envelope.lane.as_deref(), Some("transactional"));
    let dsn = sender_mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("a bounce for the expired message");
    let text = String::from_utf8_lossy(&dsn[0].data);
    assert!(text.contains("full@busy.test"), "{text}");

    // The unknown lane was delivered (as the default lane).
    let got = ok
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("a job in an unknown lane is delivered");
    assert_eq!(got[0].rcpt_to, ["someone@ok.test"]);

    // The old job is still being retried, in the default lane, at the lane's back priority.
    let mut client = beanstalk::Client::connect(bs.url()).await.unwrap();
    client.use_tube(TUBE_OUTBOUND).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        let peeked = [client.peek_delayed().await, client.peek_ready().await];
        for job in peeked.into_iter().flatten() {
            let decoded = hedwig_queue::job::Job::decode(&job.body).unwrap();
            if decoded.envelope.queue_id == old.envelope.queue_id
                && !decoded.envelope.history.is_empty()
            {
                let pri = client.stats_job(job.id).await.unwrap().get_u64("pri");
                seen = Some((decoded, pri));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (retry, pri) = seen.expect("the old job's retry is in the outbound tube");
    assert_eq!(retry.envelope.lane, None, "the job keeps what it had");
    assert!(retry.envelope.failure.is_none());
    assert_eq!(pri, Some(1024 + 100_000), "the back of the bulk lane");
    assert!(busy.received().is_empty());
    worker.stop().await;
}
