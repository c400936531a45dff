//! Delivery ledger events from the worker, read from the events tube as the ledger writer
//! would: every recipient's outcome of every attempt (250 sent, 550 bounced with the bounce's
//! own events, 451 deferred then sent on the second attempt) with MX, address, TLS, code,
//! enhanced status and reply; none with `events: false`; and a beanstalkd killed in the
//! middle of an attempt: delivery carries on and emission resumes once it is back.
//! This file's addresses: 127.0.140.10-19.

use crate::common;

use std::time::Duration;

use hedwig_queue::event::{Batch, Event, Outcome, Queued, RecipientEvent, What};
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_queue::Tubes;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Phase};
use hedwig_testkit::Beanstalkd;

/// Moves every event now in the events tube into `into` (reserving and deleting the jobs).
async fn drain(url: &str, into: &mut Vec<Event>) {
    let Ok(mut c) = beanstalk::Client::connect(url.to_owned()).await else {
        return;
    };
    if c.watch(Tubes::default().events()).await.is_err() || c.ignore("default").await.is_err() {
        return;
    }
    for _ in 0..10_000 {
        match c.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                into.extend(Batch::decode(&job.body).unwrap().events);
                c.delete(job.id).await.unwrap();
            }
            Err(_) => break,
        }
    }
}

/// Drains until `done(events)` holds, for at most `wait`.
async fn wait_events(
    url: &str,
    events: &mut Vec<Event>,
    wait: Duration,
    done: impl Fn(&[Event]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        drain(url, events).await;
        if done(events) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The recipient events of `queue_id` for `rcpt`, in order.
fn outcomes<'a>(events: &'a [Event], queue_id: &str, rcpt: &str) -> Vec<&'a RecipientEvent> {
    events
        .iter()
        .filter(|e| e.queue_id == queue_id)
        .filter_map(|e| match &e.what {
            What::Recipient(r) if r.recipient == rcpt => Some(r),
            _ => None,
        })
        .collect()
}

fn has(events: &[Event], queue_id: &str, rcpt: &str, outcome: Outcome) -> bool {
    outcomes(events, queue_id, rcpt)
        .iter()
        .any(|r| r.outcome == outcome)
}

fn zone() -> Zone {
    Zone::new()
        .mx("ok.test", 10, "mx.ok.test")
        .a("mx.ok.test", "127.0.140.10")
        .mx("bad.test", 10, "mx.bad.test")
        .a("mx.bad.test", "127.0.140.11")
        .mx("grey.test", 10, "mx.grey.test")
        .a("mx.grey.test", "127.0.140.12")
        .mx("sender.test", 10, "mx.sender.test")
        .a("mx.sender.test", "127.0.140.13")
}

#[tokio::test]
async fn sent_bounced_and_deferred_then_sent() {
    let bs = Beanstalkd::start();
    let url = bs.url();
    let dns = DnsServer::start(zone()).await;
    let _ok = common::mx("127.0.140.10", Behaviour::new().starttls()).await;
    let _bad = common::mx(
        "127.0.140.11",
        Behaviour::new().rcpt_default("550 5.1.1 no such user"),
    )
    .await;
    let grey = common::mx(
        "127.0.140.12",
        Behaviour::new().rcpt_default("451 4.7.1 greylisted"),
    )
    .await;
    let sender_mx = common::mx("127.0.140.13", Behaviour::new()).await;
    let mut config = common::config(&url, dns.addr());
    // The greylisting receiver's new behaviour applies to new connections only.
    config.limits.default.messages_per_connection = 1;
    let worker = common::start(config);
    let job = common::job(
        "sender@sender.test",
        &["a@ok.test", "b@bad.test", "c@grey.test"],
        &common::message("ledger"),
    );
    let q = job.envelope.queue_id.clone();
    common::enqueue(&url, &job).await;

    let mut events = Vec::new();
    assert!(
        wait_events(&url, &mut events, Duration::from_secs(15), |e| {
            has(e, &q, "c@grey.test", Outcome::Deferred)
        })
        .await,
        "no deferral: {events:#?}"
    );
    grey.set_behaviour(Behaviour::new());
    // The bounce's queue id, from the BounceQueued event of the first attempt.
    let bounce_id = events
        .iter()
        .find_map(|e| match &e.what {
            What::BounceQueued {
                bounce_queue_id,
                recipients,
            } if e.queue_id == q => {
                assert_eq!(recipients, &["b@bad.test"]);
                Some(bounce_queue_id.clone())
            }
            _ => None,
        })
        .expect("a BounceQueued event with the attempt's events");
    assert!(
        wait_events(&url, &mut events, Duration::from_secs(20), |e| {
            has(e, &q, "c@grey.test", Outcome::Sent)
                && has(e, &bounce_id, "sender@sender.test", Outcome::Sent)
        })
        .await,
        "no second attempt or no bounce delivery: {events:#?}"
    );
    assert_eq!(sender_mx.received().len(), 1, "the bounce, delivered");

    // 250: sent, over TLS, first attempt.
    let a = outcomes(&events, &q, "a@ok.test");
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].outcome, Outcome::Sent);
    assert_eq!(a[0].mx.as_deref(), Some("mx.ok.test"));
    assert_eq!(a[0].ip.as_deref(), Some("127.0.140.10"));
    assert_eq!(a[0].tls, Some(true));
    assert_eq!(a[0].code, Some(250));
    assert!(a[0].dsn.as_deref().is_some_and(|d| d.starts_with("2.")));
    assert!(a[0].reply.starts_with("250"), "{}", a[0].reply);
    assert_eq!(a[0].attempt, Some(1));

    // 550: bounced, with the reply.
    let b = outcomes(&events, &q, "b@bad.test");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(b[0].outcome, Outcome::Bounced);
    assert_eq!(
        (b[0].mx.as_deref(), b[0].ip.as_deref()),
        (Some("mx.bad.test"), Some("127.0.140.11"))
    );
    assert_eq!(b[0].tls, Some(false));
    assert_eq!(b[0].code, Some(550));
    assert_eq!(b[0].dsn.as_deref(), Some("5.1.1"));
    assert!(b[0].reply.contains("no such user"), "{}", b[0].reply);

    // 451 then 250: deferred on attempt 1, sent on attempt 2.
    let c = outcomes(&events, &q, "c@grey.test");
    assert_eq!(c.len(), 2, "{c:#?}");
    assert_eq!(
        (c[0].outcome, c[0].code, c[0].dsn.as_deref(), c[0].attempt),
        (Outcome::Deferred, Some(451), Some("4.7.1"), Some(1))
    );
    assert!(c[0].reply.contains("greylisted"));
    assert_eq!((c[1].outcome, c[1].attempt), (Outcome::Sent, Some(2)));
    assert_eq!(c[1].ip.as_deref(), Some("127.0.140.12"));

    // The bounce: queued as a message of its own, kind bounce, pointing at the original.
    let queued: Vec<&Queued> = events
        .iter()
        .filter(|e| e.queue_id == bounce_id)
        .filter_map(|e| match &e.what {
            What::Queued(queued) => Some(queued),
            _ => None,
        })
        .collect();
    assert_eq!(queued.len(), 1, "{events:#?}");
    assert_eq!(queued[0].message_kind, "bounce");
    assert_eq!(queued[0].bounce_of.as_deref(), Some(q.as_str()));
    assert_eq!(queued[0].sender, "");
    assert_eq!(queued[0].recipients, ["sender@sender.test"]);
    assert!(queued[0].size > 0 && queued[0].expires_at.is_some());

    // The job was put without a post office (as if one died between its put and its events
    // put): the first attempt says it was queued, with the post office's event id; the
    // second attempt does not say it again.
    let queued: Vec<&Event> = events
        .iter()
        .filter(|e| e.queue_id == q && matches!(e.what, What::Queued(_)))
        .collect();
    assert_eq!(queued.len(), 1, "{events:#?}");
    assert_eq!(queued[0].id, hedwig_queue::event::queued_event_id(&q));
    match &queued[0].what {
        What::Queued(m) => {
            assert_eq!(m.host, job.envelope.host);
            assert_eq!(m.sender, "sender@sender.test");
            assert_eq!(m.recipients.len(), 3);
            assert_eq!(m.message_kind, "message");
            assert_eq!(m.size, job.message.len() as u64);
        }
        _ => unreachable!(),
    }
    assert_eq!(queued[0].at, job.envelope.received_at * 1000);

    // Every event has its own id.
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len());
    worker.stop().await;
}

#[tokio::test]
async fn events_false_puts_none() {
    let bs = Beanstalkd::start();
    let url = bs.url();
    let dns = DnsServer::start(
        Zone::new()
            .mx("ok.test", 10, "mx.ok.test")
            .a("mx.ok.test", "127.0.140.14"),
    )
    .await;
    let ok = common::mx("127.0.140.14", Behaviour::new()).await;
    let mut config = common::config(&url, dns.addr());
    config.events = false;
    let worker = common::start(config);
    let job = common::job(
        "sender@sender.test",
        &["a@ok.test"],
        &common::message("quiet"),
    );
    common::enqueue(&url, &job).await;
    assert!(ok.wait_for(1, Duration::from_secs(10)).await.is_some());
    assert!(common::wait_tube_empty(&url, TUBE_OUTBOUND, Duration::from_secs(5)).await);
    worker.stop().await;
    let mut c = beanstalk::Client::connect(url.clone()).await.unwrap();
    assert!(!c
        .list_tubes()
        .await
        .unwrap()
        .contains(&Tubes::default().events().to_owned()));
}

#[tokio::test]
async fn a_beanstalkd_outage_mid_attempt_does_not_stop_delivery() {
    let mut bs = Beanstalkd::start();
    let url = bs.url();
    let dns = DnsServer::start(
        Zone::new()
            .mx("ok.test", 10, "mx.ok.test")
            .a("mx.ok.test", "127.0.140.15"),
    )
    .await;
    let mx = common::mx("127.0.140.15", Behaviour::new()).await;
    let mut config = common::config(&url, dns.addr());
    config.concurrency = 1;
    config.limits.default.messages_per_connection = 1;
    let worker = common::start(config);

    let first = common::job(
        "sender@sender.test",
        &["a@ok.test"],
        &common::message("one"),
    );
    common::enqueue(&url, &first).await;
    let mut events = Vec::new();
    let q1 = first.envelope.queue_id.clone();
    assert!(
        wait_events(&url, &mut events, Duration::from_secs(10), |e| {
            has(e, &q1, "a@ok.test", Outcome::Sent)
        })
        .await
    );

    // The next message's final reply is held back; beanstalkd dies meanwhile, so the 250
    // arrives while neither the delete nor the events can reach it.
    mx.set_behaviour(Behaviour::new().stall_at(Phase::DataEnd, Duration::from_secs(2)));
    let second = common::job(
        "sender@sender.test",
        &["b@ok.test"],
        &common::message("two"),
    );
    let q2 = second.envelope.queue_id.clone();
    common::enqueue(&url, &second).await;
    assert!(mx.wait_for_connections(2, Duration::from_secs(10)).await);
    bs.stop();
    mx.set_behaviour(Behaviour::new());
    assert!(
        mx.wait_for(2, Duration::from_secs(10)).await.is_some(),
        "delivered while beanstalkd is down"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    bs.restart();

    // The job comes back (its delete was lost) and is delivered again; this time its
    // events reach the tube: emission resumed.
    assert!(
        wait_events(&url, &mut events, Duration::from_secs(20), |e| {
            has(e, &q2, "b@ok.test", Outcome::Sent)
        })
        .await,
        "no events after the restart: {events:#?}"
    );
    assert!(mx.received().len() >= 3);
    // The copy delivered while beanstalkd was down is on record too: its events waited in
    // the emitter's backlog and were put after the restart.
    let copies = mx
        .received()
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == "b@ok.test"))
        .count();
    assert!(
        wait_events(&url, &mut events, Duration::from_secs(10), |e| {
            outcomes(e, &q2, "b@ok.test")
                .iter()
                .filter(|r| r.outcome == Outcome::Sent)
                .count()
                >= copies
        })
        .await,
        "{copies} copies delivered, not as many sent events: {events:#?}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_held_hosts_job_is_recorded_as_held() {
    let bs = Beanstalkd::start();
    let url = bs.url();
    let dns = DnsServer::start(Zone::new()).await;
    let mut c = beanstalk::Client::connect(url.clone()).await.unwrap();
    hedwig_queue::hold::update(&mut c, &Tubes::default(), |l| l.hold("web1.example.test"))
        .await
        .unwrap();
    let job = common::job(
        "sender@sender.test",
        &["a@ok.test", "b@ok.test"],
        &common::message("held"),
    );
    let q = job.envelope.queue_id.clone();
    common::enqueue(&url, &job).await;
    let worker = common::start(common::config(&url, dns.addr()));
    let mut events = Vec::new();
    assert!(
        wait_events(&url, &mut events, Duration::from_secs(10), |e| {
            has(e, &q, "a@ok.test", Outcome::Held) && has(e, &q, "b@ok.test", Outcome::Held)
        })
        .await,
        "{events:#?}"
    );
    assert_eq!(events.len(), 2);
    worker.stop().await;
}
