//! A message that keeps failing temporarily bounces when its queue lifetime runs out.

use crate::common;

use std::time::Duration;

use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn expires_then_bounces_with_the_last_error() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("busy.test", 10, "mx.busy.test")
            .a("mx.busy.test", "127.0.4.70")
            .mx("sender.test", 10, "mx.sender.test")
            .a("mx.sender.test", "127.0.4.71"),
    )
    .await;
    let mx = common::mx(
        "127.0.4.70",
        Behaviour::new().rcpt_default("452 4.2.2 mailbox full"),
    )
    .await;
    let sender_mx = common::mx("127.0.4.71", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.retry.max_lifetime = Duration::from_secs(2);
    let worker = common::start(config);
    common::enqueue(
        &bs.url(),
        &common::job(
            "sender@sender.test",
            &["full@busy.test"],
            &common::message("expiry"),
        ),
    )
    .await;

    let failed = common::next_failed(&bs.url(), Duration::from_secs(15))
        .await
        .expect("failed record after expiry");
    let f = failed.envelope.failure.unwrap();
    assert_eq!(f.reason, "expired");
    assert!(
        f.response.contains("452 4.2.2 mailbox full"),
        "{}",
        f.response
    );
    // Connections are reused, so count the attempts by their RCPT commands.
    let attempts = mx
        .commands()
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .count();
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    assert!(failed
        .envelope
        .history
        .iter()
        .any(|a| a.status == "deferred"));

    let dsn = sender_mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("bounce");
    let text = String::from_utf8_lossy(&dsn[0].data);
    assert!(text.contains("full@busy.test"), "{text}");
    assert!(text.contains("4.2.2"), "{text}");
    assert!(common::wait_tube_empty(&bs.url(), TUBE_OUTBOUND, Duration::from_secs(5)).await);
    assert!(mx.received().is_empty());
    worker.stop().await;
}
