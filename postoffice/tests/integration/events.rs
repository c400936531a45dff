//! Delivery ledger events from the post office: a `queued` event per post (with what mailman's
//! `Received:` field, the Message-ID and the Subject say) in the events tube of the job's
//! server before the answer; `held` (the queued event's flag, and one `held` event per
//! recipient) for a held host; none with `events: false`; `requeued`,
//! `released` and `purged` from the admin commands, naming the command and the user.
//! The post office listens on 127.0.140.1 (this file's addresses: 127.0.140.1-9).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{config, failed_record, put, PostOffice, HOST, SECRET};
use hedwig_queue::event::{Batch, Event, Outcome, Queued, What};
use hedwig_queue::tubes::{TUBE_FAILED, TUBE_HELD};
use hedwig_queue::Tubes;
use hedwig_testkit::Beanstalkd;

/// mailman's `Received:` field (as `hedwig_message::trace` writes it) and a message under it.
const MESSAGE: &str = "Received: from app.container ([172.17.0.5])\r\n\
\tby web1.example.com (mailman) with ESMTP id 0190AB12CD34EF56\r\n\
\tfor <a@example.org>;\r\n\tMon, 23 Nov 2026 04:00:00 +0000\r\n\
From: App <app@example.com>\r\nTo: a@example.org\r\n\
Subject: =?utf-8?q?Passwort_zur=C3=BCcksetzen?= for bob\r\n\
Message-ID: <reset.42@example.com>\r\n\r\nbody\r\n";

async fn start(beanstalkd: Beanstalkd, change: impl FnOnce(&mut postoffice::Config)) -> PostOffice {
    let mut config = config(&beanstalkd);
    change(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.140.1:0")
        .await
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(postoffice::serve(config, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    PostOffice {
        beanstalkd,
        addr,
        shutdown,
        task,
        http,
    }
}

async fn post(po: &PostOffice, id: &str, rcpts: &[&str]) -> String {
    let key = hedwig_core::key::derive_key(SECRET, HOST);
    let email =
        serde_json::json!({"mailfrom": "app@example.com", "rcpttos": rcpts, "data": MESSAGE})
            .to_string();
    let (status, body) = po
        .post_form(&[("fqdn", HOST), ("key", &key), ("email", &email), ("id", id)])
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Every event in the events tube (the jobs reserved and deleted, as the writer would).
pub async fn drain_events(url: &str, tubes: &Tubes) -> Vec<Event> {
    let mut c = beanstalk::Client::connect(url.to_owned()).await.unwrap();
    c.watch(tubes.events()).await.unwrap();
    c.ignore("default").await.unwrap();
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match c.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                events.extend(Batch::decode(&job.body).unwrap().events);
                c.delete(job.id).await.unwrap();
            }
            Err(beanstalk::Error::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    events
}

fn queued(event: &Event) -> &Queued {
    match &event.what {
        What::Queued(q) => q,
        other => panic!("not queued: {other:?}"),
    }
}

#[tokio::test]
async fn a_post_is_queued_in_the_ledger_with_what_the_edge_knew() {
    let po = start(Beanstalkd::start(), |_| {}).await;
    let url = po.beanstalkd.url();
    let queue_id = post(
        &po,
        "M0190AB12CD34EF56",
        &["a@example.org", "b@example.org"],
    )
    .await;
    // Put before the answer: already there.
    let events = drain_events(&url, &Tubes::default()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.queue_id, queue_id);
    assert_eq!(e.id, hedwig_queue::event::queued_event_id(&queue_id));
    let q = queued(e);
    assert_eq!(q.host, HOST);
    assert_eq!(q.sender, "app@example.com");
    assert_eq!(q.recipients, ["a@example.org", "b@example.org"]);
    assert_eq!(q.size, MESSAGE.len() as u64);
    assert_eq!(q.message_kind, "message");
    assert_eq!(q.edge_id.as_deref(), Some("M0190AB12CD34EF56"));
    assert_eq!(q.edge_client.as_deref(), Some("172.17.0.5"));
    let post_client: std::net::IpAddr = q.post_client.as_deref().unwrap().parse().unwrap();
    assert!(post_client.is_loopback(), "{post_client}");
    assert_eq!(q.message_id.as_deref(), Some("reset.42@example.com"));
    assert_eq!(q.subject.as_deref(), Some("Passwort zurücksetzen for bob"));
    assert!(!q.held);
    assert_eq!(q.bounce_of, None);

    // A repeat of the same message id is answered with the first queue id: no second event.
    let again = post(&po, "M0190AB12CD34EF56", &["a@example.org"]).await;
    assert_eq!(again, queue_id);
    assert!(drain_events(&url, &Tubes::default()).await.is_empty());
}

#[tokio::test]
async fn a_held_hosts_post_is_queued_as_held() {
    let bs = Beanstalkd::start();
    let mut c = beanstalk::Client::connect(bs.url()).await.unwrap();
    hedwig_queue::hold::update(&mut c, &Tubes::default(), |l| l.hold(HOST))
        .await
        .unwrap();
    let po = start(bs, |_| {}).await;
    post(&po, "M2", &["a@example.org", "b@example.org"]).await;
    let events = drain_events(&po.beanstalkd.url(), &Tubes::default()).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(queued(&events[0]).held);
    // and `held` for each recipient (what a webhook asking for `held` is sent), after it
    assert_eq!(
        actions(&events[1..]),
        [
            (
                events[0].queue_id.clone(),
                "a@example.org".into(),
                Outcome::Held,
                String::new()
            ),
            (
                events[0].queue_id.clone(),
                "b@example.org".into(),
                Outcome::Held,
                String::new()
            ),
        ]
    );
    assert!(events[1..].iter().all(|e| e.at > events[0].at));
}

#[tokio::test]
async fn events_false_puts_none_and_the_prefix_names_the_tube() {
    let po = start(Beanstalkd::start(), |c| c.events = false).await;
    post(&po, "M3", &["a@example.org"]).await;
    assert!(drain_events(&po.beanstalkd.url(), &Tubes::default())
        .await
        .is_empty());
    let mut c = beanstalk::Client::connect(po.beanstalkd.url())
        .await
        .unwrap();
    assert!(!c
        .list_tubes()
        .await
        .unwrap()
        .contains(&"hedwig-events".to_owned()));

    let po = start(Beanstalkd::start(), |c| c.tube_prefix = "acme".into()).await;
    post(&po, "M4", &["a@example.org"]).await;
    let acme = Tubes::new("acme").unwrap();
    assert_eq!(drain_events(&po.beanstalkd.url(), &acme).await.len(), 1);
}

/// Runs the real `postoffice` binary as user `ops`.
fn admin_as_ops(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"));
    command
        .args(args)
        .env_remove("HEDWIG_BEANSTALKD")
        .env_remove("HEDWIG_CONFIG")
        // The test reads the events tube itself: no writer may drain it.
        .env("HEDWIG_LEDGER__WRITER", "false")
        .env_remove("SUDO_USER")
        .env("USER", "ops")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (queue id, recipient, outcome, by) of every recipient event.
fn actions(events: &[Event]) -> Vec<(String, String, Outcome, String)> {
    let mut out: Vec<_> = events
        .iter()
        .map(|e| match &e.what {
            What::Recipient(r) => (
                e.queue_id.clone(),
                r.recipient.clone(),
                r.outcome,
                r.by.clone().unwrap_or_default(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

#[tokio::test]
async fn admin_commands_record_what_they_did() {
    let bs = Beanstalkd::start();
    let url = bs.url();
    let tubes = Tubes::default();
    let now = hedwig_core::unix_now();
    let q1 = failed_record(
        "Q1",
        HOST,
        &["a@gmail.com", "b@example.org"],
        550,
        "5.7.1",
        now,
    );
    let q2 = failed_record("Q2", HOST, &["c@example.net"], 550, "5.1.1", now);
    put(&url, TUBE_FAILED, &q1).await;
    put(&url, TUBE_FAILED, &q2).await;

    let (ok, _, err) = admin_as_ops(
        &["requeue", "--beanstalkd", &url, "--domain", "gmail.com"],
        &[],
    );
    assert!(ok, "{err}");
    let by = "postoffice requeue (ops)".to_owned();
    assert_eq!(
        actions(&drain_events(&url, &tubes).await),
        [("Q1".into(), "a@gmail.com".into(), Outcome::Requeued, by)]
    );

    let (ok, _, err) = admin_as_ops(
        &["purge", "--beanstalkd", &url, "--yes"],
        &[("SUDO_USER", "alice")],
    );
    assert!(ok, "{err}");
    let by = "postoffice purge (alice)".to_owned();
    assert_eq!(
        actions(&drain_events(&url, &tubes).await),
        [
            (
                "Q1".into(),
                "b@example.org".into(),
                Outcome::Purged,
                by.clone()
            ),
            ("Q2".into(), "c@example.net".into(), Outcome::Purged, by),
        ]
    );

    // release moves a held job back: `released`.
    let mut held = failed_record("Q3", HOST, &["d@example.org"], 550, "5.1.1", now);
    held.envelope.failure = None;
    put(&url, TUBE_HELD, &held).await;
    let (ok, _, err) = admin_as_ops(
        &["release", HOST, "--beanstalkd", &url, "--settle", "0s"],
        &[],
    );
    assert!(ok, "{err}");
    let by = "postoffice release (ops)".to_owned();
    assert_eq!(
        actions(&drain_events(&url, &tubes).await),
        [("Q3".into(), "d@example.org".into(), Outcome::Released, by)]
    );

    // With events off, the commands record nothing.
    put(&url, TUBE_FAILED, &q2).await;
    let (ok, _, err) = admin_as_ops(
        &["purge", "--beanstalkd", &url, "--yes"],
        &[("HEDWIG_EVENTS", "false")],
    );
    assert!(ok, "{err}");
    assert!(drain_events(&url, &tubes).await.is_empty());
}
