//! Connections are reused for the next message to the same MX; a server that limits
//! messages per connection (421 on a reused connection) gets a fresh connection, not a
//! deferral; a server that says "slow down" is left alone for the cool-down.

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;
use worker::plan::Status;

#[tokio::test]
async fn reuse_reconnect_and_cool_down() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("reuse.test", 10, "mx.reuse.test")
            .a("mx.reuse.test", "127.0.4.140")
            .mx("once.test", 10, "mx.once.test")
            .a("mx.once.test", "127.0.4.141")
            .mx("busy.test", 10, "mx.busy.test")
            .a("mx.busy.test", "127.0.4.142"),
    )
    .await;
    let reuse = common::mx("127.0.4.140", Behaviour::new()).await;
    let once = common::mx(
        "127.0.4.141",
        Behaviour::new().max_messages_per_connection(1),
    )
    .await;
    let busy = common::mx(
        "127.0.4.142",
        Behaviour::new().greeting("421 4.7.0 too many connections, slow down"),
    )
    .await;
    let bs = Beanstalkd::start();
    let mut config = common::config(&bs.url(), dns.addr());
    config.limits.cooldown = Duration::from_secs(120);
    let d = common::deliverer(config);

    for i in 0..3 {
        let out = common::deliver(&d, "reuse.test", &["a@reuse.test"]).await;
        assert_eq!(
            out[0].1.status,
            Status::Delivered,
            "message {i}: {:?}",
            out[0].1
        );
    }
    assert_eq!(reuse.received().len(), 3);
    assert_eq!(reuse.connections(), 1, "one connection carried all three");

    for i in 0..2 {
        let out = common::deliver(&d, "once.test", &["a@once.test"]).await;
        assert_eq!(
            out[0].1.status,
            Status::Delivered,
            "message {i}: {:?}",
            out[0].1
        );
    }
    assert_eq!(once.received().len(), 2);
    assert_eq!(
        once.connections(),
        2,
        "the 421 on the reused connection led to a new one"
    );

    let out = common::deliver(&d, "busy.test", &["a@busy.test"]).await;
    let o = &out[0].1;
    assert_eq!(
        (o.status, o.reason.as_str()),
        (Status::Deferred, "rejected"),
        "{o:?}"
    );
    assert_eq!(o.code, Some(421));
    // The destination cools down: the next delivery does not connect, and its retry waits
    // out the cool-down.
    let out = common::deliver(&d, "busy.test", &["b@busy.test"]).await;
    let o = &out[0].1;
    assert_eq!(
        (o.status, o.reason.as_str()),
        (Status::Deferred, "throttled"),
        "{o:?}"
    );
    let wait = o.retry_after.expect("a retry floor");
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert_eq!(busy.connections(), 1);
}

#[tokio::test]
async fn connection_cap_per_destination() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("capped.test", 10, "mx.capped.test")
            .a("mx.capped.test", "127.0.4.143"),
    )
    .await;
    let mx = common::mx(
        "127.0.4.143",
        Behaviour::new().stall_at(
            hedwig_testkit::smtp::Phase::DataEnd,
            Duration::from_millis(300),
        ),
    )
    .await;
    let bs = Beanstalkd::start();
    let mut config = common::config(&bs.url(), dns.addr());
    config.limits.default.connections = 1;
    config.limits.wait = Duration::from_millis(100);
    let d = common::deliverer(config);
    let (a, b) = tokio::join!(
        common::deliver(&d, "capped.test", &["a@capped.test"]),
        common::deliver(&d, "capped.test", &["b@capped.test"]),
    );
    let mut statuses = vec![a[0].1.reason.clone(), b[0].1.reason.clone()];
    statuses.sort();
    assert_eq!(statuses, ["delivered", "throttled"]);
    assert_eq!(mx.connections(), 1);
}
