//! Jobs already in beanstalkd when hedwig is upgraded are delivered: the bodies below are byte
//! for byte what earlier releases put (the release before issue 11, without `dkim_domains`;
//! the issue 11 release, with `dkim_domains` and a deferral in `history`), decoded by this
//! build's `hedwig_queue::job` and delivered by the worker.

use crate::common;

use std::time::Duration;

use beanstalk::Client;
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

const MX: &str = "127.0.161.1";

/// As the release before issue 11 wrote it: no `dkim_domains`.
const BEFORE_ISSUE_11: &[u8] = b"{\"v\":1,\"queue_id\":\"0193A1B2C3D4E5F60718293A\",\"message_id\":\"web1-0001\",\"host\":\"web1.example.test\",\"client_ip\":\"192.0.2.7\",\"received_at\":1764000000,\"mail_from\":\"app@sender.test\",\"rcpt_to\":[\"a@example.test\"],\"kind\":\"message\"}\nFrom: app@sender.test\r\nTo: a@example.test\r\nSubject: queued before issue 11\r\n\r\nold body\r\n";

/// As the issue 11 release wrote a retry: `dkim_domains`, one deferred attempt.
const ISSUE_11_RETRY: &[u8] = b"{\"v\":1,\"queue_id\":\"0193A1B2C3D4E5F60718293B\",\"host\":\"web1.example.test\",\"received_at\":1764000000,\"mail_from\":\"app@sender.test\",\"rcpt_to\":[\"b@example.test\"],\"kind\":\"message\",\"history\":[{\"at\":1764000060,\"recipients\":[\"b@example.test\"],\"status\":\"deferred\",\"code\":451,\"dsn\":\"4.3.0\",\"response\":\"451 4.3.0 try again later\",\"relay\":\"mx.example.test[127.0.161.1]:25\"}],\"dkim_domains\":[\"sender.test\"]}\nFrom: app@sender.test\r\nTo: b@example.test\r\nSubject: a retry from issue 11\r\n\r\nretried body\r\n";

#[tokio::test]
async fn jobs_written_by_earlier_releases_are_delivered() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", MX),
    )
    .await;
    let mx = common::mx(MX, Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    // The literal bodies carry a fixed `received_at`: keep them inside their lifetime.
    config.retry.max_lifetime = Duration::from_secs(100 * 365 * 86400);
    let mut c = Client::connect(bs.url()).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    for body in [BEFORE_ISSUE_11, ISSUE_11_RETRY] {
        c.put(body, 1024, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let worker = common::start(config);

    let mut got = mx
        .wait_for(2, Duration::from_secs(10))
        .await
        .expect("both old jobs delivered");
    got.sort_by(|a, b| a.rcpt_to.cmp(&b.rcpt_to));
    assert_eq!(got[0].mail_from, "app@sender.test");
    assert_eq!(got[0].rcpt_to, ["a@example.test"]);
    assert!(got[0]
        .data
        .ends_with(b"Subject: queued before issue 11\r\n\r\nold body\r\n"));
    assert_eq!(got[1].rcpt_to, ["b@example.test"]);
    assert!(got[1]
        .data
        .ends_with(b"Subject: a retry from issue 11\r\n\r\nretried body\r\n"));
    assert!(common::wait_tube_empty(&bs.url(), TUBE_OUTBOUND, Duration::from_secs(5)).await);
    assert_eq!(
        common::tube_counts(&bs.url(), hedwig_queue::tubes::TUBE_FAILED).await,
        (0, 0, 0, 0),
        "nothing failed"
    );
    worker.stop().await;
}
