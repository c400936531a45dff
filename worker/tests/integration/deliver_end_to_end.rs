//! A job put into beanstalkd is delivered through the MX over STARTTLS, byte for byte, and
//! the job is deleted.

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn delivered_over_starttls_byte_exact_and_deleted() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.10"),
    )
    .await;
    let mx = common::mx("127.0.4.10", Behaviour::new().starttls()).await;
    let worker = common::start(common::config(&bs.url(), dns.addr()));

    let message = common::message("e2e");
    let job = common::job(
        "sender@sender.test",
        &["Rcpt@Example.test", "two@example.test"],
        &message,
    );
    common::enqueue(&bs.url(), &job).await;

    let got = mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(
        got.len(),
        1,
        "one transaction for both recipients of one domain"
    );
    let r = &got[0];
    assert_eq!(r.data, message, "byte-exact body");
    assert!(r.tls, "STARTTLS was used");
    assert_eq!(r.helo, "relay.hedwig.test");
    assert_eq!(r.mail_from, "sender@sender.test");
    assert!(r.mail_params.contains("BODY=8BITMIME"), "{}", r.mail_params);
    assert_eq!(r.rcpt_to, ["Rcpt@example.test", "two@example.test"]);

    assert!(
        common::wait_tube_empty(
            &bs.url(),
            hedwig_queue::tubes::TUBE_OUTBOUND,
            Duration::from_secs(5)
        )
        .await,
        "job deleted after delivery"
    );
    assert!(common::next_failed(&bs.url(), Duration::ZERO)
        .await
        .is_none());
    worker.stop().await;
}
