//! A greylisted message is retried after the configured delay and then delivered once.

use crate::common;

use std::time::Duration;

use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn greylisted_then_delivered() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("grey.test", 10, "mx.grey.test")
            .a("mx.grey.test", "127.0.4.60"),
    )
    .await;
    let mx = common::mx(
        "127.0.4.60",
        Behaviour::new().rcpt_default("451 4.7.1 greylisted"),
    )
    .await;
    let mut config = common::config(&bs.url(), dns.addr());
    // The receiver's new behaviour applies to new connections: no reuse here.
    config.limits.default.messages_per_connection = 1;
    let worker = common::start(config);
    let message = common::message("retry");
    common::enqueue(
        &bs.url(),
        &common::job("sender@sender.test", &["a@grey.test"], &message),
    )
    .await;

    assert!(mx.wait_for_connections(1, Duration::from_secs(10)).await);
    // Wait for the deferral to be recorded (the retry is delayed), then stop greylisting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while common::tube_counts(&bs.url(), TUBE_OUTBOUND).await.1 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delayed retry appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mx.received().is_empty());
    mx.set_behaviour(Behaviour::new());

    let got = mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("delivered on retry");
    assert_eq!(got[0].rcpt_to, ["a@grey.test"]);
    assert_eq!(got[0].data, message);
    assert!(common::wait_tube_empty(&bs.url(), TUBE_OUTBOUND, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mx.received().len(), 1);
    assert!(common::next_failed(&bs.url(), Duration::ZERO)
        .await
        .is_none());
    worker.stop().await;
}
