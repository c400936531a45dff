//! One message, three fates: the accepted recipient is delivered once, the greylisted one is
//! put back with a delay, the rejected one goes to the failed tube and bounces to the sender.

use crate::common;

use std::time::Duration;

use beanstalk::Client;
use hedwig_queue::job::{Job, Kind};
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn accepted_deferred_and_rejected_recipients_split() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.50")
            .mx("sender.test", 10, "mx.sender.test")
            .a("mx.sender.test", "127.0.4.51"),
    )
    .await;
    let mx = common::mx(
        "127.0.4.50",
        Behaviour::new()
            .rcpt("grey@example.test", "451 4.7.1 greylisted, try later")
            .rcpt(
                "bad@example.test",
                "550-5.1.1 no such user\n550 5.1.1 really none",
            ),
    )
    .await;
    let sender_mx = common::mx("127.0.4.51", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.retry.first = Duration::from_secs(60);
    config.retry.max_delay = Duration::from_secs(60);
    let worker = common::start(config);

    let message = common::message("partial");
    let job = common::job(
        "sender@sender.test",
        &["ok@example.test", "grey@example.test", "bad@example.test"],
        &message,
    );
    common::enqueue(&bs.url(), &job).await;

    let got = mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(got[0].rcpt_to, ["ok@example.test"]);
    assert_eq!(got[0].data, message);

    // The failed-tube record: the rejected recipient, why, and the whole message.
    let failed = common::next_failed(&bs.url(), Duration::from_secs(10))
        .await
        .expect("failed record");
    assert_eq!(failed.envelope.queue_id, job.envelope.queue_id);
    assert_eq!(failed.envelope.rcpt_to, ["bad@example.test"]);
    assert_eq!(failed.envelope.host, "web1.example.test");
    assert_eq!(failed.message, message);
    let f = failed.envelope.failure.as_ref().unwrap();
    assert_eq!(f.reason, "rejected");
    assert_eq!(f.code, Some(550));
    assert_eq!(f.dsn.as_deref(), Some("5.1.1"));
    assert_eq!(f.response, "550-5.1.1 no such user 550 5.1.1 really none");
    assert_eq!(f.relay.as_deref(), Some("mx.example.test[127.0.4.50]:25"));

    // The bounce went through the queue to the sender's MX, from the null sender.
    let dsn = sender_mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("bounce delivered");
    assert_eq!(dsn[0].mail_from, "");
    assert_eq!(dsn[0].rcpt_to, ["sender@sender.test"]);
    let text = String::from_utf8_lossy(&dsn[0].data);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(text.contains("bad@example.test"), "{text}");
    assert!(text.contains("5.1.1"), "{text}");
    assert!(
        !text.contains("ok@example.test") || !text.contains("Final-Recipient: rfc822; ok@"),
        "{text}"
    );

    // The greylisted recipient waits in the outbound tube, delayed, alone.
    let mut c = Client::connect(bs.url()).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    let delayed = c.peek_delayed().await.expect("a delayed retry");
    let retry = Job::decode(&delayed.body).unwrap();
    assert_eq!(retry.envelope.rcpt_to, ["grey@example.test"]);
    assert_eq!(retry.envelope.kind, Kind::Message);
    assert_eq!(retry.message, message);
    let statuses: Vec<&str> = retry
        .envelope
        .history
        .iter()
        .map(|a| a.status.as_str())
        .collect();
    assert_eq!(statuses, ["delivered", "deferred", "bounced"]);
    assert_eq!(retry.envelope.history[1].code, Some(451));
    let (ready, delayed_n, reserved, buried) = common::tube_counts(&bs.url(), TUBE_OUTBOUND).await;
    assert_eq!((ready, delayed_n, reserved, buried), (0, 1, 0, 0));
    // The accepted recipient got exactly one copy.
    assert_eq!(mx.received().len(), 1);
    worker.stop().await;
}
