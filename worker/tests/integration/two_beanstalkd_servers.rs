//! With a list of beanstalkd servers, the worker takes jobs from all of them.

use crate::common;

use std::time::Duration;

use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn jobs_from_both_servers_are_delivered() {
    let one = Beanstalkd::start();
    let two = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.160"),
    )
    .await;
    let mx = common::mx("127.0.4.160", Behaviour::new()).await;
    let mut config = common::config(&one.url(), dns.addr());
    config.beanstalkd = vec![one.url(), two.url()];
    config.concurrency = 2;
    let worker = common::start(config);
    let m = common::message("two");
    common::enqueue(
        &one.url(),
        &common::job("s@sender.test", &["a@example.test"], &m),
    )
    .await;
    common::enqueue(
        &two.url(),
        &common::job("s@sender.test", &["b@example.test"], &m),
    )
    .await;
    let got = mx
        .wait_for(2, Duration::from_secs(10))
        .await
        .expect("both delivered");
    let mut rcpts: Vec<String> = got.iter().flat_map(|r| r.rcpt_to.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@example.test", "b@example.test"]);
    for bs in [&one, &two] {
        assert!(common::wait_tube_empty(&bs.url(), TUBE_OUTBOUND, Duration::from_secs(5)).await);
    }
    worker.stop().await;
}

#[tokio::test]
async fn one_server_stopped_mid_run_the_other_keeps_delivering() {
    let mut one = Beanstalkd::start();
    let two = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.161"),
    )
    .await;
    let mx = common::mx("127.0.4.161", Behaviour::new()).await;
    let mut config = common::config(&one.url(), dns.addr());
    config.beanstalkd = vec![one.url(), two.url()];
    config.concurrency = 4;
    let worker = common::start(config);
    let m = common::message("failover");
    common::enqueue(
        &one.url(),
        &common::job("s@sender.test", &["a@example.test"], &m),
    )
    .await;
    mx.wait_for(1, Duration::from_secs(10))
        .await
        .expect("first delivered");
    // ... and deleted (after its ledger events): a server killed between the 250 and the
    // delete would have it delivered again after its restart (the duplicate window of
    // `worker::queue`), which is not what this test is about.
    assert!(common::wait_tube_empty(&one.url(), TUBE_OUTBOUND, Duration::from_secs(10)).await);

    // server one dies (with a job queued for later: its binlog keeps it)
    let later = common::job("s@sender.test", &["c@example.test"], &m);
    let mut c = beanstalk::Client::connect(one.url()).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    c.put(
        &later.encode(),
        1024,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    one.stop();
    for rcpt in ["b1@example.test", "b2@example.test", "b3@example.test"] {
        common::enqueue(&two.url(), &common::job("s@sender.test", &[rcpt], &m)).await;
    }
    let got = mx
        .wait_for(4, Duration::from_secs(15))
        .await
        .expect("server two's jobs delivered while server one is down");
    assert_eq!(got.len(), 4);

    // server one comes back: its queued job is delivered too, exactly once
    one.restart();
    let got = mx
        .wait_for(5, Duration::from_secs(20))
        .await
        .expect("server one's job delivered after its restart");
    let mut rcpts: Vec<String> = got.iter().flat_map(|r| r.rcpt_to.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "a@example.test",
            "b1@example.test",
            "b2@example.test",
            "b3@example.test",
            "c@example.test"
        ]
    );
    worker.stop().await;
}
