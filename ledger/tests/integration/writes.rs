//! Writing events: idempotent by id, in any order, final outcomes not undone; two writers on
//! one store.

use std::net::Ipv4Addr;

use hedwig_ledger::{MessageStatus, Store};
use hedwig_queue::event::{Event, Outcome, What};

use crate::common::{outcome, queued, Stores};

const HOUR: u64 = 3_600_000;
const T0: u64 = 1_800_000_000_000; // an hour boundary

/// A message to a@ and b@: a deferred once then sent, b bounced.
fn history(queue_id: &str) -> Vec<Event> {
    vec![
        queued(
            queue_id,
            T0 + 10,
            "web1.test",
            "App@Web1.test",
            &["A@x.test", "b@x.test"],
        ),
        outcome(queue_id, T0 + 20, "a@x.test", Outcome::Deferred, 1),
        outcome(queue_id, T0 + 30, "b@x.test", Outcome::Bounced, 1),
        outcome(queue_id, T0 + HOUR + 40, "a@x.test", Outcome::Sent, 2),
    ]
}

async fn hourly(store: &Store) -> Vec<(u64, String, u64)> {
    store
        .hourly("web1.test", T0, T0 + 2 * HOUR)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.hour - T0, h.outcome, h.count))
        .collect()
}

fn expected_hourly() -> Vec<(u64, String, u64)> {
    vec![
        (0, "bounced".into(), 1),
        (0, "deferred".into(), 1),
        (0, "queued".into(), 1),
        (HOUR, "sent".into(), 1),
    ]
}

async fn check_message(store: &Store, name: &str, queue_id: &str) {
    let t = store.timeline(queue_id).await.unwrap().expect("timeline");
    let m = &t.message;
    assert_eq!(m.status, MessageStatus::Partial, "{name}");
    assert_eq!(m.host.as_deref(), Some("web1.test"));
    assert_eq!(m.sender.as_deref(), Some("app@web1.test"));
    assert_eq!(
        m.message_id.as_deref(),
        Some(format!("{queue_id}@app.test").as_str())
    );
    assert_eq!(m.queued_at, T0 + 10);
    assert_eq!(m.final_at, Some(T0 + HOUR + 40), "{name}");
    assert_eq!(m.recipients, 2);
    let r: Vec<_> = t
        .recipients
        .iter()
        .map(|r| {
            (
                r.recipient.as_str(),
                r.status.as_str(),
                r.attempts,
                r.code,
                r.is_final,
            )
        })
        .collect();
    assert_eq!(
        r,
        [
            ("a@x.test", "sent", 2, Some(250), true),
            ("b@x.test", "bounced", 1, Some(550), true)
        ],
        "{name}"
    );
    let ats: Vec<u64> = t.events.iter().map(|e| e.at - T0).collect();
    assert_eq!(ats, [10, 20, 30, HOUR + 40], "{name}: events in time order");
}

#[tokio::test]
async fn batches_are_idempotent_and_take_any_order() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 12)).await;
    for (name, store) in stores.each() {
        // In order, one batch.
        let events = history("QA");
        assert_eq!(store.write(&events).await.unwrap(), 4, "{name}");
        check_message(store, name, "QA").await;
        // The same batch again, and each event again alone: nothing changes.
        assert_eq!(store.write(&events).await.unwrap(), 0);
        for e in &events {
            assert_eq!(store.write(std::slice::from_ref(e)).await.unwrap(), 0);
        }
        check_message(store, name, "QA").await;
        assert_eq!(hourly(store).await, expected_hourly(), "{name}");

        // Reversed, one event per batch, a duplicate inside a batch.
        let other: Vec<Event> = history("QB").into_iter().rev().collect();
        for e in &other {
            assert_eq!(store.write(&[e.clone(), e.clone()]).await.unwrap(), 1);
        }
        check_message(store, name, "QB").await;
        // Both messages counted, once each.
        let doubled: Vec<_> = expected_hourly()
            .into_iter()
            .map(|(h, o, c)| (h, o, c * 2))
            .collect();
        assert_eq!(hourly(store).await, doubled, "{name}");

        // A deferral reported after the delivery (a worker that crashed before deleting its
        // job tried again) does not undo it; nor does an older one arriving late.
        store
            .write(&[
                outcome("QA", T0 + 2 * HOUR, "a@x.test", Outcome::Deferred, 3),
                outcome("QB", T0 + 15, "a@x.test", Outcome::Deferred, 1),
            ])
            .await
            .unwrap();
        for id in ["QA", "QB"] {
            let t = store.timeline(id).await.unwrap().unwrap();
            assert_eq!(t.message.status, MessageStatus::Partial, "{name} {id}");
            assert_eq!(t.recipients[0].status, "sent", "{name} {id}");
        }
        assert_eq!(store.event_count().await.unwrap(), 10);
    }
}

#[tokio::test]
async fn events_before_the_queued_event_are_kept_and_counted_later() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 13)).await;
    for (name, store) in stores.each() {
        let events = history("QC");
        // Outcomes first, in separate batches: a message row without a host, never final.
        store.write(&events[1..3]).await.unwrap();
        store.write(&events[3..]).await.unwrap();
        let t = store.timeline("QC").await.unwrap().unwrap();
        assert_eq!(t.message.host, None, "{name}");
        assert_eq!(t.message.final_at, None, "{name}");
        assert!(hourly(store).await.is_empty(), "{name}");
        // The queued event completes it, and the earlier outcomes are counted now.
        store.write(&events[..1]).await.unwrap();
        check_message(store, name, "QC").await;
        assert_eq!(hourly(store).await, expected_hourly(), "{name}");
    }
}

#[tokio::test]
async fn two_writers_on_one_store() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 14)).await;
    for (name, url) in [
        ("sqlite", stores.sqlite_url.clone()),
        ("postgres", stores.pg.url()),
    ] {
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        // 100 messages; each writer gets every other event of every message.
        let all: Vec<Event> = (0..100).flat_map(|i| history(&format!("W{i}"))).collect();
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for (i, e) in all.into_iter().enumerate() {
            if i % 2 == 0 {
                left.push(e)
            } else {
                right.push(e)
            }
        }
        let write = |store: Store, events: Vec<Event>| {
            tokio::spawn(async move {
                for chunk in events.chunks(7) {
                    store.write(chunk).await.unwrap();
                }
            })
        };
        let (x, y) = (write(a.clone(), left), write(b.clone(), right));
        x.await.unwrap();
        y.await.unwrap();
        let sent = a
            .search(&hedwig_ledger::Filter {
                status: Some(MessageStatus::Partial),
                limit: Some(500),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(sent.messages.len(), 100, "{name}");
        let counts = hourly(&b).await;
        let expected: Vec<_> = expected_hourly()
            .into_iter()
            .map(|(h, o, c)| (h, o, c * 100))
            .collect();
        assert_eq!(counts, expected, "{name}");
        // Sanity: the BounceQueued kind is stored too.
        let bq = Event {
            id: hedwig_queue::event::new_event_id(),
            at: T0 + 50,
            queue_id: "W0".into(),
            what: What::BounceQueued {
                bounce_queue_id: "B0".into(),
                recipients: vec!["b@x.test".into()],
            },
        };
        a.write(std::slice::from_ref(&bq)).await.unwrap();
        let events = a.events("W0").await.unwrap();
        assert!(events.contains(&bq), "{name}");
    }
}
