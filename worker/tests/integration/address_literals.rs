//! A job put straight into beanstalkd with an address literal recipient (issue 11 F10): the
//! worker never connects to a literal outside `address_literals.allow`, and fails that
//! recipient permanently with a clear reason; the other recipients are delivered.

use crate::common;

use std::time::Duration;

use hedwig_core::address::Recipient;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

const MX: &str = "127.0.140.30";
const INTERNAL: &str = "127.0.140.31";

#[tokio::test]
async fn literals_outside_the_allow_list_fail_permanently() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", MX),
    )
    .await;
    let mx = common::mx(MX, Behaviour::new()).await;
    let internal = common::mx(INTERNAL, Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.bounces = false;
    let worker = common::start(config);

    let literal = format!("x@[{INTERNAL}]");
    let job = common::job(
        "sender@sender.test",
        &["a@example.test", &literal, "y@[IPv6:::1]"],
        &common::message("literal"),
    );
    common::enqueue(&bs.url(), &job).await;

    // One failed record per distinct failure (each names its literal).
    let mut failed_rcpts = Vec::new();
    for _ in 0..2 {
        let failed = common::next_failed(&bs.url(), Duration::from_secs(10))
            .await
            .expect("a failed record");
        let failure = failed.envelope.failure.expect("the failure");
        assert_eq!(failure.reason, "address-literal", "{failure:?}");
        assert_eq!(failure.dsn.as_deref(), Some("5.7.1"), "{failure:?}");
        assert!(
            failure.response.contains("address_literals.allow"),
            "{failure:?}"
        );
        failed_rcpts.extend(failed.envelope.rcpt_to);
    }
    failed_rcpts.sort();
    assert_eq!(failed_rcpts, [literal.as_str(), "y@[IPv6:::1]"]);
    assert!(mx.wait_for(1, Duration::from_secs(5)).await.is_some());
    assert!(
        !internal
            .wait_for_connections(1, Duration::from_millis(500))
            .await,
        "the worker connected to the literal"
    );
    worker.stop().await;
}

#[tokio::test]
async fn literals_in_the_allow_list_are_delivered() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(Zone::new()).await;
    let internal = common::mx("127.0.140.32", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.bounces = false;
    config.address_literals.allow = vec!["127.0.140.32/32".parse().unwrap()];
    let worker = common::start(config);
    let job = common::job(
        "sender@sender.test",
        &["x@[127.0.140.32]", "y@[127.0.140.33]"],
        &common::message("allowed-literal"),
    );
    common::enqueue(&bs.url(), &job).await;
    // The test receiver's parser refuses literal addresses (501), which is fine here: what
    // counts is that the worker connected to the allowed one and to no other.
    assert!(
        internal
            .wait_for_connections(1, Duration::from_secs(10))
            .await,
        "the worker connected to the allowed literal"
    );
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let failed = common::next_failed(&bs.url(), Duration::from_secs(10))
            .await
            .expect("a failed record");
        let failure = failed.envelope.failure.expect("the failure");
        reasons.push((failed.envelope.rcpt_to, failure.reason, failure.relay));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (
                vec![Recipient::from("x@[127.0.140.32]")],
                "rejected".to_string(),
                Some("127.0.140.32[127.0.140.32]:25".to_string())
            ),
            (
                vec![Recipient::from("y@[127.0.140.33]")],
                "address-literal".to_string(),
                None
            ),
        ]
    );
    worker.stop().await;
}
