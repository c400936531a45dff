//! The suppression list on both stores: the migration from a version 1 database, the
//! entries the writer adds from events (and those it must not add), and an operator's add,
//! list, remove, expiry and pruning.

use std::net::Ipv4Addr;

use hedwig_ledger::suppress::{SuppressionFilter, GLOBAL};
use hedwig_ledger::{schema, AutoPolicy, Source, Store, Suppression};
use hedwig_queue::event::{new_event_id, Event, Outcome, RecipientEvent, What};
use sqlx::Executor;

use crate::common::{queued, Stores};

const DAY_MS: u64 = 86_400_000;

/// A recipient event with a given reply.
fn failure(
    queue_id: &str,
    at: u64,
    recipient: &str,
    outcome: Outcome,
    code: Option<u16>,
    dsn: &str,
    reply: &str,
) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Recipient(RecipientEvent {
            recipient: recipient.into(),
            outcome,
            mx: None,
            ip: None,
            tls: None,
            code,
            dsn: Some(dsn.into()),
            reply: reply.into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    }
}

async fn all(store: &Store) -> Vec<Suppression> {
    let filter = SuppressionFilter {
        limit: Some(1000),
        ..Default::default()
    };
    let mut list = store.list_suppressions(&filter, 0, true).await.unwrap();
    list.sort_by(|a, b| (&a.scope, &a.recipient).cmp(&(&b.scope, &b.recipient)));
    list
}

#[tokio::test]
async fn a_version_1_database_is_migrated_with_its_data() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 140, 40)).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/v1.db?mode=rwc", dir.path().display());
    let pg = stores.pg.url_of("v1");
    {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&stores.pg.url()).await.unwrap();
        admin.execute("CREATE DATABASE v1").await.unwrap();
        admin.close().await;
    }
    for url in [sqlite, pg] {
        // A database as version 1 made it, with a message in it.
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        pool.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await
            .unwrap();
        for statement in schema::MIGRATIONS[0] {
            pool.execute(*statement).await.unwrap();
        }
        pool.execute("INSERT INTO schema_version (version) VALUES (1)")
            .await
            .unwrap();
        pool.execute(
            "INSERT INTO messages (queue_id, host, sender, kind, queued_at, recipients, status, \
             last_event_at) VALUES ('OLD1', 'web1', 'a@x.test', 'message', 1000, 1, 'queued', 1000)",
        )
        .await
        .unwrap();
        let tables = "SELECT COUNT(*) FROM suppressions";
        assert!(pool.execute(tables).await.is_err(), "{url}: no table yet");
        pool.close().await;

        let store = Store::open(&url).await.expect("open migrates");
        assert_eq!(
            store.schema_version().await.unwrap(),
            schema::VERSION,
            "{url}"
        );
        const { assert!(schema::VERSION >= 2) };
        let old = store
            .timeline("OLD1")
            .await
            .unwrap()
            .expect("old data kept");
        assert_eq!(old.message.sender.as_deref(), Some("a@x.test"));
        // The new table works.
        store
            .add_suppression(&operator("Old@Y.test", GLOBAL, 1, None))
            .await
            .unwrap();
        assert_eq!(all(&store).await[0].recipient, "old@y.test", "{url}");
        store.close().await;
        // Opened again: nothing to migrate, the entry is there.
        let again = Store::open(&url).await.unwrap();
        assert_eq!(all(&again).await.len(), 1);
        again.close().await;
    }
}

fn operator(recipient: &str, scope: &str, at: u64, expires_at: Option<u64>) -> Suppression {
    Suppression {
        list_id: None,
        scope: scope.into(),
        recipient: recipient.into(),
        reason: "asked to stop".into(),
        source: Source::Operator,
        reply: None,
        code: None,
        dsn: None,
        queue_id: None,
        created_at: at,
        expires_at,
    }
}

#[tokio::test]
async fn hard_failures_add_entries_and_the_others_do_not() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 140, 41)).await;
    for (name, store) in stores.each() {
        let t = 1_000_000;
        let rcpts = [
            "unknown@y.test",
            "policy@y.test",
            "later@y.test",
            "nodomain@gone.test",
            "nullmx@null.test",
            "ok@y.test",
            "full@y.test",
        ];
        let batch = [
            queued("Q1", t, "web1", "App@Sender.test", &rcpts),
            failure(
                "Q1",
                t + 1,
                "Unknown@Y.test",
                Outcome::Bounced,
                Some(550),
                "5.1.1",
                "550 5.1.1 no such user",
            ),
            failure(
                "Q1",
                t + 2,
                "policy@y.test",
                Outcome::Bounced,
                Some(550),
                "5.7.1",
                "550 5.7.1 blocked by policy",
            ),
            failure(
                "Q1",
                t + 3,
                "later@y.test",
                Outcome::Deferred,
                Some(450),
                "4.1.1",
                "450 4.1.1 try later",
            ),
            failure(
                "Q1",
                t + 4,
                "nodomain@gone.test",
                Outcome::Bounced,
                None,
                "5.1.2",
                "domain gone.test does not exist (NXDOMAIN)",
            ),
            failure(
                "Q1",
                t + 5,
                "nullmx@null.test",
                Outcome::Bounced,
                None,
                "5.1.10",
                "domain null.test accepts no mail (null MX, RFC 7505)",
            ),
            failure(
                "Q1",
                t + 6,
                "ok@y.test",
                Outcome::Sent,
                Some(250),
                "2.0.0",
                "250 ok",
            ),
            failure(
                "Q1",
                t + 7,
                "full@y.test",
                Outcome::Bounced,
                Some(552),
                "5.2.2",
                "552 5.2.2 mailbox full",
            ),
        ];
        store.write(&batch).await.unwrap();
        let list = all(store).await;
        let got: Vec<(&str, &str, &str)> = list
            .iter()
            .map(|s| (s.scope.as_str(), s.recipient.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("sender.test", "nodomain@gone.test", "no-domain"),
                ("sender.test", "nullmx@null.test", "null-mx"),
                ("sender.test", "unknown@y.test", "unknown-user"),
            ],
            "{name}"
        );
        let unknown = &list[2];
        assert_eq!(unknown.source, Source::Auto);
        assert_eq!(unknown.code, Some(550));
        assert_eq!(unknown.dsn.as_deref(), Some("5.1.1"));
        assert_eq!(unknown.reply.as_deref(), Some("550 5.1.1 no such user"));
        assert_eq!(unknown.queue_id.as_deref(), Some("Q1"));
        assert_eq!(unknown.created_at, t + 1);
        assert_eq!(
            unknown.expires_at,
            Some(t + 1 + 30 * DAY_MS),
            "30 days by default"
        );

        // The same events again (a writer that crashed before its deletes) change nothing.
        let before = store.suppression_fingerprint().await.unwrap();
        store
            .write(&[failure(
                "Q9",
                t,
                "x@y.test",
                Outcome::Deferred,
                Some(451),
                "4.0.0",
                "451",
            )])
            .await
            .unwrap();
        assert_eq!(all(store).await.len(), 3);
        assert_eq!(
            store.suppression_fingerprint().await.unwrap().count,
            before.count
        );

        // A failure whose message's `queued` event comes later: added when it comes.
        store
            .write(&[failure(
                "Q2",
                t + 10,
                "late@y.test",
                Outcome::Bounced,
                Some(550),
                "5.1.1",
                "550 5.1.1 unknown",
            )])
            .await
            .unwrap();
        assert_eq!(all(store).await.len(), 3, "{name}: no sender domain yet");
        store
            .write(&[queued(
                "Q2",
                t + 9,
                "web1",
                "app@other.test",
                &["late@y.test"],
            )])
            .await
            .unwrap();
        let late: Vec<_> = all(store)
            .await
            .into_iter()
            .filter(|s| s.recipient == "late@y.test")
            .collect();
        assert_eq!(late.len(), 1, "{name}");
        assert_eq!(late[0].scope, "other.test");
        assert_eq!(late[0].created_at, t + 10);

        // A bounce's recipient (an application's own address) is never suppressed.
        let mut bounce = queued("Q3", t, "web1", "", &["app@sender.test"]);
        if let What::Queued(q) = &mut bounce.what {
            q.message_kind = "bounce".into();
        }
        store
            .write(&[
                bounce,
                failure(
                    "Q3",
                    t + 1,
                    "app@sender.test",
                    Outcome::Bounced,
                    Some(550),
                    "5.1.1",
                    "550 5.1.1",
                ),
            ])
            .await
            .unwrap();
        assert!(all(store)
            .await
            .iter()
            .all(|s| s.recipient != "app@sender.test"));

        // Global scope, permanent: one entry for every sender; an earlier per-domain one stays.
        let global = store.clone().with_auto_suppression(AutoPolicy {
            enabled: true,
            global: true,
            expiry: None,
        });
        global
            .write(&[
                queued("Q4", t + 20, "web1", "app@sender.test", &["unknown@y.test"]),
                failure(
                    "Q4",
                    t + 21,
                    "unknown@y.test",
                    Outcome::Bounced,
                    Some(550),
                    "5.1.1",
                    "550 5.1.1 gone",
                ),
            ])
            .await
            .unwrap();
        let entries: Vec<_> = all(store)
            .await
            .into_iter()
            .filter(|s| s.recipient == "unknown@y.test")
            .collect();
        assert_eq!(entries.len(), 2, "{name}");
        assert_eq!(
            (entries[0].scope.as_str(), entries[0].expires_at),
            (GLOBAL, None)
        );

        // Off: nothing added.
        let off = store.clone().with_auto_suppression(AutoPolicy {
            enabled: false,
            ..AutoPolicy::default()
        });
        off.write(&[
            queued("Q5", t, "web1", "app@sender.test", &["new@y.test"]),
            failure(
                "Q5",
                t + 1,
                "new@y.test",
                Outcome::Bounced,
                Some(550),
                "5.1.1",
                "550 5.1.1",
            ),
        ])
        .await
        .unwrap();
        assert!(all(store).await.iter().all(|s| s.recipient != "new@y.test"));

        // A complaint (ARF report to the bounce listener) suppresses at once and for good,
        // even with automatic entries off, after the recipient was `sent`.
        off.write(&[
            queued("Q6", t, "web1", "news@sender.test", &["angry@y.test"]),
            failure(
                "Q6",
                t + 1,
                "angry@y.test",
                Outcome::Sent,
                Some(250),
                "2.0.0",
                "250 ok",
            ),
            failure(
                "Q6",
                t + 5_000,
                "angry@y.test",
                Outcome::Complained,
                None,
                "",
                "complaint (RFC 5965 ARF): Feedback-Type: abuse",
            ),
        ])
        .await
        .unwrap();
        let entry = all(store)
            .await
            .into_iter()
            .find(|s| s.recipient == "angry@y.test")
            .unwrap_or_else(|| panic!("{name}: no entry for the complaint"));
        assert_eq!(
            (
                entry.scope.as_str(),
                entry.source,
                entry.reason.as_str(),
                entry.expires_at
            ),
            ("sender.test", Source::Complaint, "complaint", None),
            "{name}"
        );
    }
}

#[tokio::test]
async fn operators_add_list_remove_and_entries_expire() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 140, 42)).await;
    for (name, store) in stores.each() {
        let now = 10 * DAY_MS;
        let empty = store.suppression_fingerprint().await.unwrap();
        store
            .add_suppression(&operator("A@X.test", "Example.COM", now - 5, None))
            .await
            .unwrap();
        store
            .add_suppression(&operator("b@x.test", GLOBAL, now - 4, Some(now + DAY_MS)))
            .await
            .unwrap();
        store
            .add_suppression(&operator("old@x.test", GLOBAL, now - 3, Some(now - 1)))
            .await
            .unwrap();
        let added = store.suppression_fingerprint().await.unwrap();
        assert_ne!(added, empty);
        assert_eq!(added.count, 3);

        let list = |f: SuppressionFilter, expired: bool| async move {
            store
                .list_suppressions(&f, now, expired)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.recipient)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            list(Default::default(), false).await,
            ["b@x.test", "a@x.test"],
            "{name}: newest first, expired left out"
        );
        assert_eq!(list(Default::default(), true).await.len(), 3);
        let by_scope = SuppressionFilter {
            scope: Some("example.com".into()),
            ..Default::default()
        };
        assert_eq!(list(by_scope.clone(), false).await, ["a@x.test"]);
        let by_recipient = SuppressionFilter {
            recipient: Some("A@x.TEST".into()),
            ..Default::default()
        };
        assert_eq!(list(by_recipient.clone(), false).await, ["a@x.test"]);
        let auto = SuppressionFilter {
            source: Some(Source::Auto),
            ..Default::default()
        };
        assert!(list(auto.clone(), true).await.is_empty());
        let limited = SuppressionFilter {
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(list(limited, false).await.len(), 1);

        // Intake's view: active entries only, bounded.
        let (active, more) = store.active_suppressions(now, 10).await.unwrap();
        assert_eq!((active.len(), more), (2, false));
        let (active, more) = store.active_suppressions(now, 1).await.unwrap();
        assert_eq!((active.len(), more), (1, true));
        assert_eq!(active[0].recipient, "b@x.test", "the newest kept");

        // Replacing: an operator's add makes the entry what it says.
        store
            .add_suppression(&operator("a@x.test", "example.com", now, Some(now + 5)))
            .await
            .unwrap();
        let a = store
            .list_suppressions(&by_recipient, now, false)
            .await
            .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].expires_at, Some(now + 5));

        // Removing: nothing without a condition; by recipient; by source.
        assert_eq!(
            store
                .remove_suppressions(&Default::default())
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.remove_suppressions(&by_recipient).await.unwrap(), 1);
        assert_eq!(store.remove_suppressions(&auto).await.unwrap(), 0);
        assert_ne!(store.suppression_fingerprint().await.unwrap(), added);

        // Pruning deletes what ran out, and only that.
        assert_eq!(store.prune_suppressions(now).await.unwrap(), 1, "{name}");
        assert_eq!(list(Default::default(), true).await, ["b@x.test"]);
        assert_eq!(store.prune_suppressions(now + 2 * DAY_MS).await.unwrap(), 1);
        assert!(list(Default::default(), true).await.is_empty());
    }
}
