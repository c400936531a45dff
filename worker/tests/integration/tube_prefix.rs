//! With `tube_prefix: acme` the worker uses the `acme…` tubes for everything: it reserves
//! from `acme`, reads the hold list in `acme-holds` (as `postoffice hold` writes it), moves a
//! held host's mail to `acme-held`, and records a permanent failure in `acme-failed`. The
//! default tubes stay untouched.

use crate::common;

use std::time::Duration;

use beanstalk::Client;
use hedwig_queue::hold::{self, HoldList};
use hedwig_queue::job::Job;
use hedwig_queue::Tubes;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

const MX: &str = "127.0.161.2";

#[tokio::test]
async fn every_tube_follows_the_prefix() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", MX),
    )
    .await;
    let mx = common::mx(
        MX,
        Behaviour::new().rcpt("nobody@example.test", "550 5.1.1 no such user"),
    )
    .await;
    let tubes = Tubes::new("acme").unwrap();
    let mut c = Client::connect(bs.url()).await.unwrap();
    let mut list = HoldList::new();
    list.hold("web9.example.test").unwrap();
    hold::write(&mut c, &tubes, &list).await.unwrap();

    let delivered = common::job("s@sender.test", &["a@example.test"], &common::message("ok"));
    let rejected = common::job(
        "s@sender.test",
        &["nobody@example.test"],
        &common::message("no"),
    );
    let mut held = common::job(
        "s@sender.test",
        &["b@example.test"],
        &common::message("held"),
    );
    held.envelope.host = "web9.example.test".into();
    c.use_tube("acme").await.unwrap();
    for job in [&delivered, &rejected, &held] {
        c.put(&job.encode(), 1024, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let mut config = common::config(&bs.url(), dns.addr());
    config.tube_prefix = "acme".into();
    config.bounces = false;
    let worker = common::start(config);

    let got = mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("delivered from tube acme");
    assert_eq!(got[0].rcpt_to, ["a@example.test"]);
    assert!(common::wait_tube_empty(&bs.url(), "acme", Duration::from_secs(10)).await);

    let mut r = Client::connect(bs.url()).await.unwrap();
    r.watch("acme-failed").await.unwrap();
    r.ignore("default").await.unwrap();
    let failed = r
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let failed = Job::decode(&failed.body).unwrap();
    assert_eq!(failed.envelope.rcpt_to, ["nobody@example.test"]);
    assert_eq!(
        failed.envelope.failure.unwrap().dsn.as_deref(),
        Some("5.1.1")
    );

    r.watch("acme-held").await.unwrap();
    r.ignore("acme-failed").await.unwrap();
    let moved = r
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(Job::decode(&moved.body).unwrap(), held);

    for tube in ["hedwig", "hedwig-failed", "hedwig-held"] {
        assert_eq!(
            common::tube_counts(&bs.url(), tube).await,
            (0, 0, 0, 0),
            "{tube}"
        );
    }
    assert_eq!(mx.received().len(), 1);
    worker.stop().await;
}
