//! DNS answers decide: implicit MX when a domain has no MX, null MX and NXDOMAIN bounce,
//! SERVFAIL and timeouts defer (and are never taken for "no MX").

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;
use worker::plan::Status;

#[tokio::test]
async fn implicit_null_nx_servfail_timeout() {
    let dns = DnsServer::start(
        Zone::new()
            .a("implicit.test", "127.0.4.30")
            .null_mx("nullmx.test")
            .a("nullmx.test", "127.0.4.30")
            .mx("noaddr.test", 10, "ghost.noaddr.test")
            .txt("ghost.noaddr.test", "exists, but no address")
            .servfail("broken.test")
            .timeout("slow.test")
            .a("exists.test", "127.0.4.31"),
    )
    .await;
    let implicit = common::mx("127.0.4.30", Behaviour::new()).await;
    let bs = Beanstalkd::start();
    let mut config = common::config(&bs.url(), dns.addr());
    config.timeouts.connect = Duration::from_millis(500);
    let d = common::deliverer(config);

    let out = common::deliver(&d, "implicit.test", &["a@implicit.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    assert_eq!(
        out[0].1.relay.as_deref(),
        Some("implicit.test[127.0.4.30]:25")
    );
    assert_eq!(implicit.received().len(), 1);

    let check = |domain: &'static str, status: Status, reason: &'static str| {
        let d = d.clone();
        async move {
            let rcpt = format!("a@{domain}");
            let out = common::deliver(&d, domain, &[rcpt.as_str()]).await;
            let o = &out[0].1;
            assert_eq!(
                (o.status, o.reason.as_str()),
                (status, reason),
                "{domain}: {o:?}"
            );
            o.clone()
        }
    };
    let null = check("nullmx.test", Status::Bounced, "null-mx").await;
    assert_eq!(null.dsn, "5.1.10");
    check("nowhere.test", Status::Bounced, "no-domain").await;
    check("noaddr.test", Status::Bounced, "no-mx").await;
    check("broken.test", Status::Deferred, "dns").await;
    let started = std::time::Instant::now();
    check("slow.test", Status::Deferred, "dns").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // Null MX: the A record is never used.
    assert_eq!(implicit.received().len(), 1);
}
