//! Intake and the suppression list with the store on PostgreSQL: a recipient on the list is
//! taken out of a post (the rest is queued, the ledger records it `suppressed`), for the
//! sender domain its entry names only; and while PostgreSQL is down intake goes on at once
//! with the list it had.
//!
//! This file's addresses: 127.0.140.105.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hedwig_ledger::{Source, Store, Suppression};
use hedwig_testkit::{Beanstalkd, Postgres};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{jobs_in, HOST, SECRET};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 140, 105);

fn entry(recipient: &str, scope: &str) -> Suppression {
    Suppression {
        list_id: None,
        scope: scope.into(),
        recipient: recipient.into(),
        reason: "test".into(),
        source: Source::Operator,
        reply: None,
        code: None,
        dsn: None,
        queue_id: None,
        created_at: hedwig_queue::event::now_millis(),
        expires_at: None,
    }
}

async fn post(
    http: &reqwest::Client,
    intake: std::net::SocketAddr,
    from: &str,
    to: &[&str],
) -> (u16, String) {
    let key = hedwig_core::key::derive_key(SECRET, HOST);
    let email =
        json!({"mailfrom": from, "rcpttos": to, "data": "Subject: s\r\n\r\nbody\r\n"}).to_string();
    let answer = http
        .post(format!("http://{intake}/"))
        .form(&[
            ("fqdn", HOST),
            ("key", key.as_str()),
            ("email", email.as_str()),
        ])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    (status, body["id"].as_str().unwrap_or_default().to_owned())
}

/// The recipients of the outbound job of `queue_id`.
async fn queued_to(beanstalkd: &Beanstalkd, queue_id: &str) -> Vec<String> {
    jobs_in(&beanstalkd.url(), hedwig_queue::tubes::TUBE_OUTBOUND)
        .await
        .into_iter()
        .find(|j| j.envelope.queue_id == queue_id)
        .map(|j| j.envelope.rcpt_to.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_recipients_leave_the_post_and_a_store_outage_keeps_the_last_list() {
    let beanstalkd = Beanstalkd::start_on(IP);
    let mut pg = Postgres::start_on(IP);
    let store = Store::open(&pg.url()).await.unwrap();
    store
        .add_suppression(&entry("Gone@Example.org", "example.com"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::config(&beanstalkd);
    config.data_dir = dir.path().to_path_buf();
    config.ledger.writer = true;
    config.ledger.url = Some(pg.url());
    config.suppression.refresh = Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind((IP, 0)).await.unwrap();
    let intake = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(postoffice::serve(config, listener, stop.clone()));
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        let health = http.get(format!("http://{intake}/health")).send().await;
        if health.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up);

    // Loaded at start: taken out for the entry's sender domain, kept for another one.
    let (status, q1) = post(
        &http,
        intake,
        "app@example.com",
        &["gone@example.org", "bob@example.org"],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(queued_to(&beanstalkd, &q1).await, ["bob@example.org"]);
    let (status, q2) = post(&http, intake, "app@other.com", &["gone@example.org"]).await;
    assert_eq!(status, 200);
    assert_eq!(queued_to(&beanstalkd, &q2).await, ["gone@example.org"]);

    // The ledger: the message with both recipients, one suppressed and final.
    let mut timeline = None;
    for _ in 0..200 {
        timeline = store.timeline(&q1).await.unwrap();
        if timeline.as_ref().is_some_and(|t| t.recipients.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timeline = timeline.expect("q1 in the ledger");
    let gone = timeline
        .recipients
        .iter()
        .find(|r| r.recipient == "gone@example.org")
        .expect("the suppressed recipient is on record");
    assert_eq!((gone.status.as_str(), gone.is_final), ("suppressed", true));
    let bob = timeline
        .recipients
        .iter()
        .find(|r| r.recipient == "bob@example.org")
        .unwrap();
    assert_eq!(bob.status, "queued");

    // A new global entry reaches intake within a few refreshes.
    store
        .add_suppression(&entry("all@example.org", "*"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, q3) = post(
        &http,
        intake,
        "app@other.com",
        &["all@example.org", "bob@example.org"],
    )
    .await;
    assert_eq!(queued_to(&beanstalkd, &q3).await, ["bob@example.org"]);

    let metrics = http
        .get(format!("http://{intake}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "hedwig_postoffice_recipients_suppressed_total{{host=\"{HOST}\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("hedwig_postoffice_suppression_entries 2"),
        "{metrics}"
    );

    // PostgreSQL down: intake answers at once with the list it had.
    store.close().await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let (status, q4) = post(
        &http,
        intake,
        "app@example.com",
        &["gone@example.org", "all@example.org", "carol@example.org"],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(queued_to(&beanstalkd, &q4).await, ["carol@example.org"]);
    // Every recipient suppressed: 200, nothing queued.
    let (status, q5) = post(&http, intake, "app@example.com", &["gone@example.org"]).await;
    assert_eq!(status, 200);
    assert!(queued_to(&beanstalkd, &q5).await.is_empty());

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
