//! With a list of beanstalkd servers, the worker takes jobs from all of them.

mod common;

use std::time::Duration;

use hedwig_core::TUBE_OUTBOUND;
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
