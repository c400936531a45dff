//! The wire protocol's answers against a real beanstalkd.

use crate::common;

use crate::common::{email, PostOffice, HOST, SECRET};
use hedwig_core::key::derive_key;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn keygen_key_is_accepted_and_job_is_complete() {
    let po = PostOffice::start().await;
    let (status, body) = po
        .send(email(&["user@example.org"], "Subject: hi\r\n\r\nhello\r\n"))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["duplicate"], false);
    let jobs = po.jobs().await;
    assert_eq!(jobs.len(), 1);
    let env = &jobs[0].envelope;
    assert_eq!(env.queue_id, id);
    assert_eq!(env.host, HOST);
    assert_eq!(env.mail_from, "app@example.com");
    assert_eq!(env.rcpt_to, vec!["user@example.org"]);
    assert_eq!(env.client_ip.as_deref(), Some("127.0.0.1"));
    assert!(env.received_at > 0);
    assert_eq!(jobs[0].message, b"Subject: hi\r\n\r\nhello\r\n");
}

#[tokio::test]
async fn old_hedwig_request_with_aliases() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    let email = json!({"from": "app@example.com", "to": ["a@example.org", "b@example.org"],
                       "data": "Subject: old\n\nbody\n"})
    .to_string();
    let (status, body) = po
        .post_form(&[("fqdn", HOST), ("secret", &key), ("email", &email)])
        .await;
    assert_eq!(status, 200, "{body}");
    let jobs = po.jobs().await;
    assert_eq!(
        jobs[0].envelope.rcpt_to,
        vec!["a@example.org", "b@example.org"]
    );
    assert_eq!(jobs[0].message, b"Subject: old\n\nbody\n");
}

#[tokio::test]
async fn json_body_is_accepted() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    let resp = po
        .http
        .post(po.url())
        .json(&json!({"fqdn": HOST, "key": key, "id": "mid-1",
                      "email": {"mailfrom": "", "rcpttos": ["x@example.org"], "data": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let jobs = po.jobs().await;
    assert_eq!(jobs[0].envelope.mail_from, "", "null sender allowed");
    assert_eq!(jobs[0].envelope.message_id.as_deref(), Some("mid-1"));
}

#[tokio::test]
async fn eight_bit_utf8_and_crlf_arrive_byte_for_byte() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    // UTF-8 text in `data`
    let utf8 = "Subject: =?UTF-8?Q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n\
                \r\nGr\u{fc}\u{df}e \u{1f600}\r\n.leading dot\r\nbare\nlf\r\n";
    let (status, _) = po.send(email(&["u@example.org"], utf8)).await;
    assert_eq!(status, 200);
    // 8-bit Latin-1 bytes that are not UTF-8 travel base64 in `data_b64`
    let latin1: Vec<u8> = b"Subject: x\r\n\r\ncaf\xe9 \xff\x00\r\n".to_vec();
    let email8 = hedwig_core::wire::Email::new(
        "app@example.com".into(),
        vec!["u@example.org".into()],
        latin1.clone(),
    );
    let email8 = serde_json::to_string(&email8).unwrap();
    let (status, body) = po
        .post_form(&[("fqdn", HOST), ("key", &key), ("email", &email8)])
        .await;
    assert_eq!(status, 200, "{body}");
    let jobs = po.jobs().await;
    let mut messages: Vec<Vec<u8>> = jobs.into_iter().map(|j| j.message).collect();
    messages.sort();
    let mut expected = vec![utf8.as_bytes().to_vec(), latin1];
    expected.sort();
    assert_eq!(messages, expected);
}

#[tokio::test]
async fn wrong_key_and_unknown_host_are_401() {
    let po = PostOffice::start().await;
    let data = email(&["u@example.org"], "x").to_string();
    let wrong = derive_key("another-secret-0123456789abcdef", HOST);
    let (status, body) = po
        .post_form(&[("fqdn", HOST), ("key", &wrong), ("email", &data)])
        .await;
    assert_eq!(status, 401);
    let other_host_key = derive_key(SECRET, "web2.example.com");
    let (status2, body2) = po
        .post_form(&[("fqdn", HOST), ("key", &other_host_key), ("email", &data)])
        .await;
    assert_eq!(status2, 401);
    assert_eq!(body, body2, "no hint whether host or key was wrong");
    let (status, _) = po
        .post_form(&[("fqdn", HOST), ("key", "zz"), ("email", &data)])
        .await;
    assert_eq!(status, 401);
    assert_eq!(po.ready_count().await, 0);
}

#[tokio::test]
async fn previous_secret_accepted_during_rotation() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.secret = Some("new-secret-0123456789abcdef012345".into());
    config.previous_secrets = vec![SECRET.into()];
    let po = PostOffice::start_with(beanstalkd, config).await;
    let (status, _) = po.send(email(&["u@example.org"], "x")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_envelopes_are_400_with_reason() {
    let po = PostOffice::start().await;
    for (email, needle) in [
        (email(&[], "x"), "no recipients"),
        (email(&["not-an-address"], "x"), "rcpttos"),
        (email(&["a@b..c"], "x"), "rcpttos"),
        (
            json!({"mailfrom": "bad sender@", "rcpttos": ["u@example.org"], "data": "x"}),
            "mailfrom",
        ),
        (
            json!({"mailfrom": "", "rcpttos": ["u@example.org"]}),
            "data",
        ),
    ] {
        let (status, body) = po.send(email.clone()).await;
        assert_eq!(status, 400, "{email}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(needle), "{email}: {error}");
    }
    // UTF-8 local part and IDN domain are valid
    let (status, body) = po
        .send(email(&["j\u{f6}rg@b\u{fc}cher.example"], "x"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(po.ready_count().await, 1);
}

#[tokio::test]
async fn policy_403_and_429() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.revoked = vec!["revoked.example.com".into()];
    config.hosts.insert(
        HOST.into(),
        postoffice::config::HostPolicy {
            allowed_sender_domains: vec!["example.com".into()],
            rate_per_minute: 3,
            rate_burst: None,
            ..Default::default()
        },
    );
    let po = PostOffice::start_with(beanstalkd, config).await;
    let revoked_key = derive_key(SECRET, "revoked.example.com");
    let data = email(&["u@example.org"], "x").to_string();
    let (status, body) = po
        .post_form(&[
            ("fqdn", "revoked.example.com"),
            ("key", &revoked_key),
            ("email", &data),
        ])
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = po
        .send(json!({"mailfrom": "x@evil.test", "rcpttos": ["u@example.org"], "data": "x"}))
        .await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("evil.test"));
    // a burst of 3 (refusals above took no token), then 429
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(po.send(email(&["u@example.org"], "x")).await.0);
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    assert_eq!(po.ready_count().await, 3);
}

#[tokio::test]
async fn oversized_message_is_413() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.max_message_size = hedwig_core::config::ByteSize(10_000);
    let po = PostOffice::start_with(beanstalkd, config).await;
    let (status, _) = po
        .send(email(&["u@example.org"], &"a".repeat(10_000)))
        .await;
    assert_eq!(status, 200);
    let (status, body) = po
        .send(email(&["u@example.org"], &"a".repeat(10_001)))
        .await;
    assert_eq!(status, 413, "{body}");
    // a body far over the limit is refused while reading
    let (status, _) = po
        .send(email(&["u@example.org"], &"a".repeat(200_000)))
        .await;
    assert_eq!(status, 413);
    assert_eq!(po.ready_count().await, 1);
}

#[tokio::test]
async fn repeated_message_id_is_queued_once() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    let data = email(&["u@example.org"], "x").to_string();
    let fields = [
        ("fqdn", HOST),
        ("key", key.as_str()),
        ("email", &data),
        ("id", "m-42"),
    ];
    let (s1, b1) = po.post_form(&fields).await;
    let (s2, b2) = po.post_form(&fields).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1["id"], b2["id"]);
    assert_eq!(b2["duplicate"], true);
    assert_eq!(po.ready_count().await, 1);
    // the same id from another host is another message
    let key2 = derive_key(SECRET, "web2.example.com");
    let (s3, b3) = po
        .post_form(&[
            ("fqdn", "web2.example.com"),
            ("key", &key2),
            ("email", &data),
            ("id", "m-42"),
        ])
        .await;
    assert_eq!(s3, 200);
    assert_ne!(b3["id"], b1["id"]);
    assert_eq!(po.ready_count().await, 2);
    // The duplicate is counted for its (authenticated) sending host.
    let text = po
        .http
        .get(format!("http://{}/metrics", po.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("hedwig_postoffice_duplicates_total{{host=\"{HOST}\"}} 1");
    assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    assert!(
        !text.contains("duplicates_total{host=\"web2.example.com\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn check_endpoint_and_metrics() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    let ok = po
        .http
        .post(format!("http://{}/check", po.addr))
        .form(&[("fqdn", HOST), ("key", &key)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = po
        .http
        .post(format!("http://{}/check", po.addr))
        .form(&[("fqdn", HOST), ("key", "00")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    po.send(email(&["u@example.org"], "12345")).await;
    po.send(email(&[], "x")).await;
    let text = po
        .http
        .get(format!("http://{}/metrics", po.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("hedwig_postoffice_requests_total{status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hedwig_postoffice_requests_total{status=\"400\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hedwig_postoffice_bytes_queued_total{{host=\"{HOST}\"}} 5"
        )),
        "{text}"
    );
}

/// Sends SIGSTOP or SIGCONT to beanstalkd.
fn signal_beanstalkd(po: &PostOffice, signal: &str) {
    let pid = po.beanstalkd.pid().expect("beanstalkd runs");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Found by the fault-injection run: mailman killed while its post waited for beanstalkd's
/// answer. The client's disconnect cancelled the request handler after beanstalkd had the job
/// but before the id was recorded, so mailman's retry with the same id was queued again.
#[tokio::test]
async fn id_is_recorded_even_when_the_client_goes_away_during_the_put() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    let data = email(&["user@example.org"], "Subject: once\r\n\r\nbody\r\n").to_string();
    let fields = [
        ("fqdn", HOST),
        ("key", key.as_str()),
        ("email", data.as_str()),
        ("id", "m-cancelled"),
    ];
    // A first message warms the pool: the next put goes out at once on a connection that
    // already uses the tube.
    let (status, _) = po
        .send(email(&["first@example.org"], "Subject: 1\r\n\r\n1\r\n"))
        .await;
    assert_eq!(status, 200);
    // beanstalkd stopped: the put is sent and waits for its answer; the client gives up and
    // closes the connection in the meantime.
    signal_beanstalkd(&po, "-STOP");
    let gone = po
        .http
        .post(po.url())
        .form(&fields)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out: {gone:?}");
    // Let hyper notice the closed connection before beanstalkd answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal_beanstalkd(&po, "-CONT");
    for _ in 0..100 {
        if po.ready_count().await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        po.ready_count().await,
        2,
        "beanstalkd took the cancelled put"
    );

    // The sender's retry (same id) is answered as a duplicate, not queued again.
    let (status, body) = po.post_form(&fields).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");
    let jobs = po.jobs().await;
    assert_eq!(jobs.len(), 2, "queued once");
    assert_eq!(jobs[1].envelope.queue_id, body["id"].as_str().unwrap());
}
