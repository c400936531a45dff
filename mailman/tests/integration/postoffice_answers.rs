//! What the client hears for each postoffice answer, against a stand-in postoffice that
//! answers as told (the real postoffice is in the end-to-end tests).

use std::time::Duration;

use crate::common::*;

const BODY: &[u8] = b"Subject: test\r\nFrom: a@example.com\r\n\r\nhello \xe9\r\n..dotted\r\n";

#[tokio::test]
async fn accepted_gets_250_with_queue_id_and_exact_bytes() {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(
        reply.starts_with("250 2.0.0 Ok: queued as Q0000"),
        "{reply}"
    );
    assert_eq!(spooled(dir.path()), 0);
    let posts = po.posts();
    assert_eq!(posts.len(), 1);
    let p = &posts[0];
    assert_eq!(p.fqdn, "mailman.test");
    // Signed: the key is not in the body, the headers prove it (checked by the stand-in).
    assert_eq!(p.key, "");
    assert_eq!(po.state.lock().unwrap().unsigned, 0);
    assert_eq!(p.email.mailfrom, "a@example.com");
    assert_eq!(p.email.rcpttos, vec!["b@example.org"]);
    let id = p.id.clone().unwrap();
    assert!(reply.contains(&id), "{reply}");
    let bytes = p.email.clone().into_message().unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("Received: from test.client ([127.0.0.1])\r\n\tby mailman.test (mailman) with ESMTP id "),
        "{text}"
    );
    assert!(text.contains(&format!("id {id}\r\n\tfor <b@example.org>;\r\n\t")));
    // the body follows the header unchanged (after unstuffing)
    assert!(
        bytes.ends_with(b"Subject: test\r\nFrom: a@example.com\r\n\r\nhello \xe9\r\n.dotted\r\n")
    );
    assert_eq!(m.metric("mailman_messages_forwarded_inline_total").await, 1);
    assert_eq!(m.metric("mailman_spool_depth").await, 0);
    assert!(c.cmd("QUIT").await.starts_with("221"));
    m.stop().await;
}

#[tokio::test]
async fn permanent_rejections_reach_the_client_and_nothing_stays() {
    let po = StandIn::start(400).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    for (status, code) in [(400, "554 5.6.0"), (403, "550 5.7.1"), (413, "552 5.3.4")] {
        po.set(status);
        let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
        assert!(reply.starts_with(code), "{status}: {reply}");
        assert!(
            reply.contains(&format!("stand-in says {status}")),
            "{reply}"
        );
        assert_eq!(spooled(dir.path()), 0);
    }
    assert_eq!(m.metric("mailman_messages_rejected_total").await, 3);
    // nothing is retried later
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(po.posts().len(), 3);
    m.stop().await;
}

#[tokio::test]
async fn temporary_failures_spool_then_forward_exactly_once() {
    let po = StandIn::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    for status in [503, 429, 401] {
        po.set(status);
        let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
        assert!(
            reply.starts_with("250 2.0.0 Ok: queued locally"),
            "{status}: {reply}"
        );
    }
    assert_eq!(spooled(dir.path()), 3);
    // retries keep failing with 401 for a while: still spooled, counted, health says so
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spooled(dir.path()), 3);
    assert!(
        m.metric("mailman_forward_failures_total{reason=\"wrong_key\"}")
            .await
            >= 2
    );
    let health: serde_json::Value = reqwest::get(format!("http://{}/health", m.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["wrong_key"], true);
    assert_eq!(health["spool_waiting"], 3);
    // the postoffice recovers: each message is queued once
    po.set(200);
    assert!(po.wait_queued(3, Duration::from_secs(10)).await);
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = po.posts();
    let accepted: Vec<_> = posts.iter().filter_map(|p| p.id.clone()).collect();
    assert_eq!(po.queued(), 3);
    assert!(
        accepted.len() >= 6,
        "every message was tried more than once"
    );
    assert_eq!(m.metric("mailman_messages_forwarded_later_total").await, 3);
    assert_eq!(m.metric("mailman_spool_depth").await, 0);
    m.stop().await;
}

#[tokio::test]
async fn unreachable_postoffice_then_it_starts() {
    // a port nobody listens on yet
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[format!("http://{addr}/")])).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    assert_eq!(spooled(dir.path()), 1);
    let po = StandIn::start_on(addr, 200).await;
    assert!(po.wait_queued(1, Duration::from_secs(10)).await);
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    assert!(
        m.metric("mailman_forward_failures_total{reason=\"unreachable\"}")
            .await
            >= 1
    );
    m.stop().await;
}

#[tokio::test]
async fn slow_postoffice_client_gets_250_after_the_deadline_and_no_duplicate() {
    let po = StandIn::start(200).await;
    po.set_delay(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[po.url()]);
    cfg.forward_deadline = Duration::from_millis(200);
    let m = Mailman::start(cfg).await;
    let mut c = hello(m.smtp).await;
    let started = std::time::Instant::now();
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(started.elapsed() < Duration::from_millis(1200));
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    // the post in flight completes and settles the message
    assert!(po.wait_queued(1, Duration::from_secs(10)).await);
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(po.posts().len(), 1, "not posted again");
    m.stop().await;
}

#[tokio::test]
async fn failover_to_the_second_postoffice() {
    let down = StandIn::start(503).await;
    let up = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[down.url(), up.url()])).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(
        reply.starts_with("250 2.0.0 Ok: queued as Q0000"),
        "{reply}"
    );
    assert_eq!(down.posts().len(), 1);
    assert_eq!(up.queued(), 1);
    // a permanent answer from the first is final: the second is not asked
    down.set(400);
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("554"), "{reply}");
    assert_eq!(up.posts().len(), 1);
    m.stop().await;
}

#[tokio::test]
async fn spooled_messages_survive_a_restart() {
    let po = StandIn::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    for _ in 0..3 {
        let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    drop(c);
    m.stop().await;
    assert_eq!(spooled(dir.path()), 3);
    po.set(200);
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    assert!(po.wait_queued(3, Duration::from_secs(10)).await);
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    m.stop().await;
}

#[tokio::test]
async fn spool_full_is_452() {
    let po = StandIn::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[po.url()]);
    cfg.max_message_size = hedwig_core::config::ByteSize(1000);
    cfg.spool_max = hedwig_core::config::ByteSize(1500);
    let m = Mailman::start(cfg).await;
    let mut c = hello(m.smtp).await;
    let body = vec![b'x'; 500];
    let mut body = body;
    body.extend_from_slice(b"\r\n");
    let first = c
        .send_mail("a@example.com", &["b@example.org"], &body)
        .await;
    assert!(first.starts_with("250"), "{first}");
    let second = c
        .send_mail("a@example.com", &["b@example.org"], &body)
        .await;
    assert!(second.starts_with("452 4.3.1"), "{second}");
    assert_eq!(spooled(dir.path()), 1);
    assert_eq!(m.metric("mailman_messages_refused_total").await, 1);
    m.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_noticed_at_start() {
    let po = StandIn::start(401).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let url = format!("http://{}/health", m.http);
    let mut flagged = false;
    for _ in 0..100 {
        let health: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if health["wrong_key"] == true {
            flagged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(flagged, "the start-up key check flags a 401");
    assert!(po.posts().is_empty(), "no message was needed to find out");
    m.stop().await;
}

/// With a long backoff, a message spooled while the postoffice was down goes out as soon as
/// another message gets through, not after its backoff.
#[tokio::test]
async fn a_success_pulls_spooled_messages_forward() {
    let po = StandIn::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[po.url()]);
    cfg.retry_min = Duration::from_secs(60);
    cfg.retry_max = Duration::from_secs(600);
    let m = Mailman::start(cfg).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    po.set(200);
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    assert!(
        po.wait_queued(2, Duration::from_secs(5)).await,
        "not after 60 s"
    );
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    m.stop().await;
}

/// A postoffice that times out may have queued the message: mailman does not hand it to the
/// next postoffice in the same round (their duplicate windows are not shared), it asks the
/// first one again later.
#[tokio::test]
async fn no_failover_after_a_timeout() {
    let slow = StandIn::start(200).await;
    slow.set_delay(Duration::from_millis(800));
    let other = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[slow.url(), other.url()]);
    cfg.forward_deadline = Duration::from_millis(100);
    cfg.forward_timeout = Duration::from_millis(300);
    cfg.retry_min = Duration::from_millis(200);
    let m = Mailman::start(cfg).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        other.posts().is_empty(),
        "the second postoffice was not asked"
    );
    slow.set_delay(Duration::ZERO);
    assert!(slow.wait_queued(1, Duration::from_secs(5)).await);
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    assert!(other.posts().is_empty());
    assert!(
        m.metric("mailman_forward_failures_total{reason=\"timeout\"}")
            .await
            >= 1
    );
    m.stop().await;
}
