//! Search (each filter, cursor pages), stuck messages and pruning, on both backends.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use hedwig_ledger::{Filter, MessageStatus, Store};
use hedwig_queue::event::{Event, Outcome};

use crate::common::{outcome, queued, Stores};

const T0: u64 = 1_800_000_000_000;
const MIN: u64 = 60_000;

/// 40 messages, one a minute: hosts web0/web1 alternating, senders s0..s3, recipient
/// r{i%5}@x.test plus everyone@x.test; every third one sent, the others deferred.
fn corpus() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..40u64 {
        let id = format!("Q{i:03}");
        let at = T0 + i * MIN;
        let rcpt = format!("r{}@x.test", i % 5);
        events.push(queued(
            &id,
            at,
            &format!("web{}", i % 2),
            &format!("S{}@App.test", i % 4),
            &[&rcpt],
        ));
        let o = if i % 3 == 0 {
            Outcome::Sent
        } else {
            Outcome::Deferred
        };
        events.push(outcome(&id, at + 1, &rcpt, o, 1));
    }
    events
}

async fn ids(store: &Store, filter: Filter) -> Vec<String> {
    let page = store.search(&filter).await.unwrap();
    page.messages.into_iter().map(|m| m.queue_id).collect()
}

fn q(ids: impl IntoIterator<Item = u64>) -> Vec<String> {
    ids.into_iter().map(|i| format!("Q{i:03}")).collect()
}

#[tokio::test]
async fn search_filters_and_cursor_pages() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 15)).await;
    for (name, store) in stores.each() {
        store.write(&corpus()).await.unwrap();
        let all = |f: Filter| Filter {
            limit: Some(500),
            ..f
        };
        // Newest first.
        assert_eq!(
            ids(store, all(Filter::default())).await,
            q((0..40).rev()),
            "{name}"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    host: Some("web1".into()),
                    ..Default::default()
                })
            )
            .await,
            q((0..40).rev().filter(|i| i % 2 == 1)),
            "{name} host"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    sender: Some("s2@APP.test".into()),
                    ..Default::default()
                })
            )
            .await,
            q((0..40).rev().filter(|i| i % 4 == 2)),
            "{name} sender, any case"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    recipient: Some("R3@x.test".into()),
                    ..Default::default()
                })
            )
            .await,
            q((0..40).rev().filter(|i| i % 5 == 3)),
            "{name} recipient"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    message_id: Some("<Q007@app.test>".into()),
                    ..Default::default()
                })
            )
            .await,
            q([7]),
            "{name} message id"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    edge_id: Some("edge-Q009".into()),
                    ..Default::default()
                })
            )
            .await,
            q([9]),
            "{name} mailman's message id"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    edge_id: Some("edge-Q009".into()),
                    host: Some("web0".into()),
                    ..Default::default()
                })
            )
            .await,
            Vec::<String>::new(),
            "{name} mailman's message id of another host"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    queue_id: Some("Q012".into()),
                    ..Default::default()
                })
            )
            .await,
            q([12])
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    status: Some(MessageStatus::Sent),
                    ..Default::default()
                })
            )
            .await,
            q((0..40).rev().filter(|i| i % 3 == 0)),
            "{name} status"
        );
        assert_eq!(
            ids(
                store,
                all(Filter {
                    from: Some(T0 + 10 * MIN),
                    to: Some(T0 + 13 * MIN),
                    ..Default::default()
                })
            )
            .await,
            q([12, 11, 10]),
            "{name} time range"
        );
        // Filters combine.
        assert_eq!(
            ids(
                store,
                all(Filter {
                    host: Some("web0".into()),
                    recipient: Some("r0@x.test".into()),
                    status: Some(MessageStatus::Sent),
                    ..Default::default()
                })
            )
            .await,
            q([30, 0]),
            "{name} combined"
        );
        assert!(ids(
            store,
            all(Filter {
                host: Some("nope".into()),
                ..Default::default()
            })
        )
        .await
        .is_empty());
        // Something that looks like SQL is just a value.
        assert!(ids(
            store,
            all(Filter {
                host: Some("x' OR '1'='1".into()),
                ..Default::default()
            })
        )
        .await
        .is_empty());

        // Pages of 7, with and without a recipient filter: every message once, in order.
        for recipient in [None, Some("r1@x.test".to_owned())] {
            let mut seen = Vec::new();
            let mut filter = Filter {
                limit: Some(7),
                recipient: recipient.clone(),
                ..Default::default()
            };
            for _ in 0..10 {
                let page = store.search(&filter).await.unwrap();
                assert!(page.messages.len() <= 7);
                seen.extend(page.messages.into_iter().map(|m| m.queue_id));
                match page.next {
                    Some(cursor) => filter.cursor = Some(cursor),
                    None => break,
                }
            }
            let expected = match recipient {
                None => q((0..40).rev()),
                Some(_) => q((0..40).rev().filter(|i| i % 5 == 1)),
            };
            assert_eq!(seen, expected, "{name} pages {recipient:?}");
            assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
        }
    }
}

#[tokio::test]
async fn stuck_messages_and_pruning() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 16)).await;
    let day = 86_400_000;
    let after = Duration::from_millis(5 * day + 3_600_000);
    let now = T0 + 40 * day;
    for (name, store) in stores.each() {
        store.write(&corpus()).await.unwrap(); // queued at T0..: old
                                               // Recent: one deferred (not stuck yet), one sent.
        store
            .write(&[
                queued("NEW1", now - day, "web0", "a@b.test", &["c@d.test"]),
                outcome("NEW1", now - day + 5, "c@d.test", Outcome::Deferred, 1),
                queued("NEW2", now - day, "web0", "a@b.test", &["c@d.test"]),
                outcome("NEW2", now - day + 5, "c@d.test", Outcome::Sent, 1),
            ])
            .await
            .unwrap();
        // The old deferred ones (i % 3 != 0) are stuck: 26 of 40; oldest first.
        let expected: Vec<String> = q((0..40).filter(|i| i % 3 != 0));
        assert_eq!(store.stuck_count(now, after).await.unwrap(), 26, "{name}");
        let stuck: Vec<String> = store
            .stuck(now, after, 500)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.queue_id)
            .collect();
        assert_eq!(stuck, expected, "{name}");
        assert_eq!(store.stuck(now, after, 3).await.unwrap().len(), 3);
        // Later the recent deferred one is stuck too.
        assert_eq!(store.stuck_count(now + 5 * day, after).await.unwrap(), 27);

        // Prune everything older than 30 days, 7 messages per transaction.
        let pruned = store.prune(now - 30 * day, 7).await.unwrap();
        assert_eq!(pruned, 40, "{name}");
        assert!(store.timeline("Q000").await.unwrap().is_none());
        assert_eq!(
            store.event_count().await.unwrap(),
            4,
            "{name}: only the recent events"
        );
        assert_eq!(store.stuck_count(now, after).await.unwrap(), 0);
        assert!(store.timeline("NEW1").await.unwrap().is_some());
        assert!(store
            .hourly("web0", 0, u64::MAX / 2)
            .await
            .unwrap()
            .iter()
            .all(|h| h.hour >= now - 30 * day));
        assert_eq!(store.prune(now - 30 * day, 7).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn overview_counts_per_hour_minute_and_host() {
    const HOUR: u64 = 3_600_000;
    let stores = Stores::start(Ipv4Addr::new(127, 0, 150, 15)).await;
    for (name, store) in stores.each() {
        store.write(&corpus()).await.unwrap();
        // T0 starts an hour; the 40 messages and their outcomes all fall in it.
        let hours = store.hourly_all(T0 - HOUR, T0 + 2 * HOUR).await.unwrap();
        let got: Vec<(u64, &str, u64)> = hours
            .iter()
            .map(|h| (h.hour, h.outcome.as_str(), h.count))
            .collect();
        assert_eq!(
            got,
            [(T0, "deferred", 26), (T0, "queued", 40), (T0, "sent", 14)],
            "{name}: both hosts added up"
        );
        assert!(store
            .hourly_all(T0 + HOUR, T0 + 2 * HOUR)
            .await
            .unwrap()
            .is_empty());
        let minutes = store.per_minute(T0, T0 + 40 * MIN).await.unwrap();
        let want: Vec<(u64, String, u64)> = (0..40u64)
            .map(|i| {
                let status = if i % 3 == 0 { "sent" } else { "deferred" };
                (T0 + i * MIN, status.to_owned(), 1)
            })
            .collect();
        assert_eq!(minutes, want, "{name}");
        let window = store
            .per_minute(T0 + 10 * MIN, T0 + 20 * MIN)
            .await
            .unwrap();
        assert_eq!(window.len(), 10, "{name}: [from, to)");
        assert_eq!(window[0].0, T0 + 10 * MIN, "{name}");
        assert_eq!(
            store.hosts_last_seen().await.unwrap(),
            [("web0".to_owned(), T0), ("web1".to_owned(), T0)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn recipients_per_domain_and_status() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 150, 16)).await;
    let mut events = Vec::new();
    // 6 messages a minute apart: recipients at a.test (3), B.test (2, mixed case), c.test (1).
    let rcpts = [
        "x@a.test", "y@a.test", "z@a.test", "x@B.test", "y@b.test", "x@c.test",
    ];
    for (i, rcpt) in rcpts.iter().enumerate() {
        let id = format!("D{i}");
        let at = T0 + i as u64 * MIN;
        events.push(queued(&id, at, "web0", "s@app.test", &[rcpt]));
        let o = match i {
            0 | 3 => Outcome::Sent,
            1 | 4 => Outcome::Deferred,
            _ => Outcome::Bounced,
        };
        events.push(outcome(&id, at + 1, rcpt, o, 1));
    }
    for (name, store) in stores.each() {
        store.write(&events).await.unwrap();
        let (counts, truncated) = store
            .domain_statuses(T0, T0 + 10 * MIN, 1000)
            .await
            .unwrap();
        assert!(!truncated, "{name}");
        let got: Vec<(&str, &str, u64)> = counts
            .iter()
            .map(|(d, s, n)| (d.as_str(), s.as_str(), *n))
            .collect();
        assert_eq!(
            got,
            [
                ("a.test", "bounced", 1),
                ("a.test", "deferred", 1),
                ("a.test", "sent", 1),
                ("b.test", "deferred", 1),
                ("b.test", "sent", 1),
                ("c.test", "bounced", 1),
            ],
            "{name}"
        );
        // The window is [from, to); the cap reads the newest first and says so.
        let (counts, _) = store
            .domain_statuses(T0 + 3 * MIN, T0 + 5 * MIN, 1000)
            .await
            .unwrap();
        assert_eq!(counts.iter().map(|c| c.2).sum::<u64>(), 2, "{name}");
        let (counts, truncated) = store.domain_statuses(T0, T0 + 10 * MIN, 2).await.unwrap();
        assert!(truncated, "{name}");
        assert_eq!(counts.len(), 2, "{name}: the 2 newest: {counts:?}");
        assert!(counts.iter().all(|c| c.0 != "a.test"), "{name}: {counts:?}");
    }
}
