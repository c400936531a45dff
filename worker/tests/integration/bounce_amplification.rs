//! Amplified backscatter is bounded (issue 11 F4). A post forged with the victim as envelope
//! sender, 64 KB of attacker headers and 1,000 recipients at an MX that rejects each with a
//! long multi-line reply: before the fix the worker made one 16.6 MB bounce of it (154x the
//! post), and one more for every such post. Now each bounce returns at most
//! `bounce_limits.returned_size` of the original (headers only), at most
//! `diagnostic_size` of each reply, details at most `recipients` recipients, and the victim
//! gets at most `per_sender` bounces per interval; every failure is still recorded in the
//! failed tube.
//!
//! Addresses: 127.0.4.220 (the rejecting MX), 127.0.4.221 (the victim's MX).

use crate::common;

use std::time::Duration;

use hedwig_queue::tubes::{TUBE_FAILED, TUBE_OUTBOUND};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

const RECIPIENTS: usize = 1000;
const POSTS: usize = 4;
/// Bounces the victim may get per interval in this test.
const PER_SENDER: u32 = 2;

/// A multi-line 550 of about 9 KB.
fn long_reply() -> String {
    let line = format!("5.7.1 {}", "blocked-".repeat(110));
    let mut reply = String::new();
    for _ in 0..9 {
        reply.push_str(&format!("550-{line}\n"));
    }
    reply.push_str(&format!("550 {line}"));
    reply
}

/// 64 KB of attacker headers, then a short body.
fn post() -> Vec<u8> {
    let mut m = b"From: Victim <victim@victim.test>\r\nTo: many@target.test\r\n\
                  Subject: amplify\r\nMessage-ID: <amp@victim.test>\r\n"
        .to_vec();
    let mut i = 0;
    while m.len() < 64 * 1024 {
        m.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "z".repeat(70)).as_bytes());
        i += 1;
    }
    m.extend_from_slice(b"\r\nhello\r\n");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_long_rejections_make_a_small_bounce_and_few_of_them() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("target.test", 10, "mx.target.test")
            .a("mx.target.test", "127.0.4.220")
            .mx("victim.test", 10, "mx.victim.test")
            .a("mx.victim.test", "127.0.4.221"),
    )
    .await;
    let reply = long_reply();
    assert!(reply.len() > 8 * 1024);
    let _target = common::mx("127.0.4.220", Behaviour::new().rcpt_default(&reply)).await;
    let victim = common::mx("127.0.4.221", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.bounce_limits.per_sender = PER_SENDER;
    let worker = common::start(config);

    let message = post();
    let rcpts: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("u{i}@target.test"))
        .collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    for _ in 0..POSTS {
        common::enqueue(
            &bs.url(),
            &common::job("victim@victim.test", &rcpts, &message),
        )
        .await;
    }

    // Every post's failure is recorded, bounce or not.
    for n in 0..POSTS {
        let failed = common::next_failed(&bs.url(), Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("failed record {n} of {POSTS}"));
        assert_eq!(failed.envelope.rcpt_to.len(), RECIPIENTS);
        let f = failed.envelope.failure.expect("a failure");
        assert_eq!(f.code, Some(550));
    }
    assert!(common::wait_tube_empty(&bs.url(), TUBE_OUTBOUND, Duration::from_secs(30)).await);
    assert_eq!(
        common::tube_counts(&bs.url(), TUBE_FAILED).await,
        (0, 0, 0, 0)
    );

    // The victim got only PER_SENDER bounces; each is small.
    let bounces = victim
        .wait_for(PER_SENDER as usize, Duration::from_secs(30))
        .await
        .expect("the first bounces arrive");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bounces_now = victim.received();
    assert_eq!(
        bounces_now.len(),
        PER_SENDER as usize,
        "{POSTS} posts from one sender: only {PER_SENDER} bounces (sizes {:?})",
        bounces_now.iter().map(|b| b.data.len()).collect::<Vec<_>>()
    );
    // The defaults: 50,000 bytes of the original, 512 bytes of each diagnostic, 100
    // recipients detailed. Whatever else it holds is a few KB.
    let bound = 50_000 + 100 * (2 * 512 + 400) + 8 * 1024;
    for bounce in &bounces {
        let size = bounce.data.len();
        eprintln!(
            "bounce: {size} bytes for a post of {} bytes to {RECIPIENTS} recipients ({:.2}x)",
            message.len(),
            size as f64 / message.len() as f64
        );
        assert!(size <= bound, "bounce of {size} bytes > {bound}");
        assert!(size < message.len() * 3, "amplified: {size} bytes");
        assert_eq!(bounce.mail_from, "");
        assert_eq!(bounce.rcpt_to, ["victim@victim.test"]);
        let text = String::from_utf8_lossy(&bounce.data);
        assert!(
            text.contains("... and 900 more recipients"),
            "the rest is summarised"
        );
        assert_eq!(text.matches("Final-Recipient:").count(), 100);
        assert!(!text.contains("hello"), "no body is returned");
    }
    worker.stop().await;
}

/// Bounces to the operator's own `return_path` are not limited: the poster did not choose
/// that address. (127.0.4.222: the rejecting MX, 127.0.4.223: the operator's MX.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_to_a_configured_return_path_are_not_limited() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("target2.test", 10, "mx.target2.test")
            .a("mx.target2.test", "127.0.4.222")
            .mx("operator.test", 10, "mx.operator.test")
            .a("mx.operator.test", "127.0.4.223"),
    )
    .await;
    let _target = common::mx(
        "127.0.4.222",
        Behaviour::new().rcpt_default("550 5.1.1 no such user"),
    )
    .await;
    let operator = common::mx("127.0.4.223", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.bounce_limits.per_sender = 1;
    config.return_path.default = Some("bounces@operator.test".into());
    let worker = common::start(config);
    for _ in 0..3 {
        common::enqueue(
            &bs.url(),
            &common::job(
                "app@victim.test",
                &["x@target2.test"],
                b"Subject: s\r\n\r\nx\r\n",
            ),
        )
        .await;
    }
    let got = operator.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(
        got.map(|g| g.len()),
        Some(3),
        "every bounce reaches the return path"
    );
    worker.stop().await;
}
