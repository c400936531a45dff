//! MX hosts are tried in preference order; a refused connection, a 4xx greeting and a broken
//! IPv6 address each move on, and the mail lands at the first host that takes it.

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;
use worker::plan::Status;

#[tokio::test]
async fn falls_back_through_refused_busy_and_ipv6() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("fallback.test", 30, "mx3.fallback.test")
            .mx("fallback.test", 10, "mx1.fallback.test")
            .mx("fallback.test", 20, "mx2.fallback.test")
            // Nothing listens on .20.
            .a("mx1.fallback.test", "127.0.4.20")
            .a("mx2.fallback.test", "127.0.4.21")
            // ::1 port 25 refuses; the IPv4 address works.
            .aaaa("mx3.fallback.test", "::1")
            .a("mx3.fallback.test", "127.0.4.22"),
    )
    .await;
    let busy = common::mx("127.0.4.21", Behaviour::new().greeting("421 4.3.2 busy")).await;
    let good = common::mx("127.0.4.22", Behaviour::new()).await;
    let bs = Beanstalkd::start();
    let d = common::deliverer(common::config(&bs.url(), dns.addr()));

    let out = common::deliver(&d, "fallback.test", &["a@fallback.test"]).await;
    assert_eq!(out.len(), 1);
    let o = &out[0].1;
    assert_eq!(o.status, Status::Delivered, "{o:?}");
    assert_eq!(o.relay.as_deref(), Some("mx3.fallback.test[127.0.4.22]:25"));
    assert_eq!(busy.connections(), 1, "the 421 host was tried once");
    assert_eq!(
        good.wait_for(1, Duration::from_secs(2))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn lowest_preference_wins_and_all_failing_is_temporary() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("order.test", 20, "b.order.test")
            .mx("order.test", 10, "a.order.test")
            .a("a.order.test", "127.0.4.23")
            .a("b.order.test", "127.0.4.24")
            .mx("down.test", 10, "x.down.test")
            .a("x.down.test", "127.0.4.25"),
    )
    .await;
    let a = common::mx("127.0.4.23", Behaviour::new()).await;
    let b = common::mx("127.0.4.24", Behaviour::new()).await;
    let bs = Beanstalkd::start();
    let d = common::deliverer(common::config(&bs.url(), dns.addr()));
    for _ in 0..5 {
        let out = common::deliver(&d, "order.test", &["x@order.test"]).await;
        assert_eq!(out[0].1.status, Status::Delivered);
    }
    assert_eq!(a.received().len(), 5);
    assert_eq!(b.connections(), 0);

    // Nothing listens at down.test's only MX: temporary, never a bounce.
    let out = common::deliver(&d, "down.test", &["x@down.test"]).await;
    assert_eq!(out[0].1.status, Status::Deferred, "{:?}", out[0].1);
    assert_eq!(out[0].1.reason, "connect");
}
