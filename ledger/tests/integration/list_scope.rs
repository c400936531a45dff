//! Suppression entries of one mailing list (issue 19), on both stores: the migration from the
//! previous schema version with its entries, what the previous version's queries still do
//! with the table, the writer's entry for an unsubscribe that names a `List-Id:`, and the
//! filters (a scope with or without its lists, one list, removal of one list's entry).
//!
//! Addresses: 127.0.230.20-29.

use std::net::Ipv4Addr;

use hedwig_ledger::suppress::{ListMatch, SuppressionFilter};
use hedwig_ledger::{schema, Source, Store, Suppression};
use hedwig_queue::event::{new_event_id, Event, Outcome, RecipientEvent, What};
use sqlx::{Executor, Row};

use crate::common::{queued, Stores};

fn unsubscribed(queue_id: &str, at: u64, recipient: &str, list_id: Option<&str>) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Recipient(RecipientEvent {
            recipient: recipient.into(),
            outcome: Outcome::Unsubscribed,
            mx: None,
            ip: None,
            tls: None,
            code: None,
            dsn: None,
            reply: "one-click unsubscribe (RFC 8058)".into(),
            attempt: None,
            by: None,
            list_id: list_id.map(str::to_owned),
            pool: None,
            source_ip: None,
            sender_domain: None,
        }),
    }
}

fn operator(recipient: &str, scope: &str, list_id: Option<&str>, at: u64) -> Suppression {
    Suppression {
        scope: scope.into(),
        list_id: list_id.map(str::to_owned),
        recipient: recipient.into(),
        reason: "asked to stop".into(),
        source: Source::Operator,
        reply: None,
        code: None,
        dsn: None,
        queue_id: None,
        created_at: at,
        expires_at: None,
    }
}

/// (scope, list, recipient, reason) of the entries `filter` finds, sorted.
async fn find(store: &Store, filter: SuppressionFilter) -> Vec<(String, Option<String>, String)> {
    let mut got: Vec<_> = store
        .list_suppressions(&filter, 0, true)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.scope, s.list_id, s.recipient))
        .collect();
    got.sort();
    got
}

fn entry(scope: &str, list: Option<&str>, recipient: &str) -> (String, Option<String>, String) {
    (scope.into(), list.map(str::to_owned), recipient.into())
}

#[tokio::test]
async fn the_previous_version_is_migrated_and_can_still_read_and_write_the_table() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 230, 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/prev.db?mode=rwc", dir.path().display());
    let pg = stores.pg.url_of("prev");
    {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&stores.pg.url()).await.unwrap();
        admin.execute("CREATE DATABASE prev").await.unwrap();
        admin.close().await;
    }
    let previous = schema::VERSION - 1;
    for url in [sqlite, pg] {
        // A database as the previous version made it, with an entry it wrote.
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        pool.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await
            .unwrap();
        for statements in &schema::MIGRATIONS[..previous as usize] {
            for statement in *statements {
                pool.execute(*statement).await.unwrap();
            }
        }
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(previous)
            .execute(&pool)
            .await
            .unwrap();
        // The previous version's upsert (its columns, its conflict target).
        let old_upsert = "INSERT INTO suppressions (scope, recipient, reason, source, reply, \
             code, dsn, queue_id, created_at, expires_at, updated_at) VALUES ($1, $2, $3, \
             'complaint', NULL, NULL, NULL, 'Q0', $4, NULL, $4) ON CONFLICT (scope, recipient) \
             DO UPDATE SET reason = excluded.reason, updated_at = excluded.updated_at";
        let old_write = |scope: &'static str, reason: &'static str, at: i64| {
            sqlx::query(old_upsert)
                .bind(scope)
                .bind("bob@y.test")
                .bind(reason)
                .bind(at)
        };
        old_write("news.test", "unsubscribed", 1)
            .execute(&pool)
            .await
            .unwrap();
        assert!(
            pool.execute("SELECT list_id FROM suppressions")
                .await
                .is_err(),
            "{url}: no list_id before"
        );
        pool.close().await;

        let store = Store::open(&url).await.expect("open migrates");
        assert_eq!(store.schema_version().await.unwrap(), schema::VERSION);
        let all = || SuppressionFilter {
            limit: Some(1000),
            ..Default::default()
        };
        // The old entry holds for the whole scope.
        assert_eq!(
            find(&store, all()).await,
            [entry("news.test", None, "bob@y.test")],
            "{url}"
        );
        // Two lists of the same domain for the same recipient, beside the whole scope's entry.
        for list in ["a.news.test", "B.News.TEST"] {
            store
                .add_suppression(&operator("bob@y.test", "news.test", Some(list), 2))
                .await
                .unwrap();
        }
        let everything = [
            entry("news.test", None, "bob@y.test"),
            entry("news.test", Some("a.news.test"), "bob@y.test"),
            entry("news.test", Some("b.news.test"), "bob@y.test"),
        ];
        assert_eq!(find(&store, all()).await, everything, "{url}");

        // What a post office of the previous version does with the table now: its intake
        // query reads a list's entry under a scope that is no sender domain (so it does not
        // suppress by it), and its writer's upsert still works.
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let mut scopes: Vec<String> = sqlx::query(
            "SELECT scope, recipient, expires_at FROM suppressions \
             WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at DESC LIMIT $2",
        )
        .bind(0i64)
        .bind(10i64)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("scope"))
        .collect();
        scopes.sort();
        assert_eq!(
            scopes,
            [
                "news.test",
                "news.test <a.news.test>",
                "news.test <b.news.test>"
            ]
        );
        old_write("news.test", "complaint", 3)
            .execute(&pool)
            .await
            .unwrap();
        old_write("other.test", "complaint", 3)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let mut got = find(&store, all()).await;
        assert_eq!(got.len(), 4, "{url}: {got:?}");
        got.retain(|e| e.0 == "other.test");
        assert_eq!(got, [entry("other.test", None, "bob@y.test")]);
        store.close().await;
    }
}

#[tokio::test]
async fn an_unsubscribe_from_a_list_suppresses_that_list_and_filters_tell_them_apart() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 230, 21)).await;
    for (name, store) in stores.each() {
        let t = 1_000_000;
        let batch = [
            queued(
                "Q1",
                t,
                "web1",
                "news@News.test",
                &["bob@y.test", "amy@y.test"],
            ),
            unsubscribed("Q1", t + 1, "Bob@Y.test", Some("Weekly.News.test")),
            // The same recipient from a message without a list: the whole domain.
            queued("Q2", t, "web1", "news@news.test", &["bob@y.test"]),
            unsubscribed("Q2", t + 2, "bob@y.test", None),
            // A list id no message could carry (an older worker's token): the whole domain.
            unsubscribed("Q1", t + 3, "amy@y.test", Some("two words")),
        ];
        store.write(&batch).await.unwrap();
        let all = || SuppressionFilter {
            limit: Some(1000),
            ..Default::default()
        };
        assert_eq!(
            find(store, all()).await,
            [
                entry("news.test", None, "amy@y.test"),
                entry("news.test", None, "bob@y.test"),
                entry("news.test", Some("weekly.news.test"), "bob@y.test"),
            ],
            "{name}"
        );
        let listed = store
            .list_suppressions(
                &SuppressionFilter {
                    list: ListMatch::Id("weekly.news.test".into()),
                    ..Default::default()
                },
                0,
                false,
            )
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].source,
                listed[0].reason.as_str(),
                listed[0].expires_at
            ),
            (Source::Complaint, "unsubscribed", None),
            "{name}: for good"
        );
        // Intake's view carries the list.
        let (active, _) = store.active_suppressions(0, 10).await.unwrap();
        let mut lists: Vec<_> = active
            .iter()
            .map(|a| (a.scope.as_str(), a.list_id.as_deref()))
            .collect();
        lists.sort();
        assert_eq!(
            lists,
            [
                ("news.test", None),
                ("news.test", None),
                ("news.test", Some("weekly.news.test"))
            ]
        );

        // Filters: a scope takes its lists' entries unless told otherwise.
        let filter = |scope: Option<&str>, list: ListMatch| SuppressionFilter {
            recipient: Some("bob@y.test".into()),
            scope: scope.map(str::to_owned),
            list,
            limit: Some(100),
            ..Default::default()
        };
        assert_eq!(
            find(store, filter(Some("news.test"), ListMatch::Any))
                .await
                .len(),
            2
        );
        assert_eq!(
            find(store, filter(Some("news.test"), ListMatch::Whole)).await,
            [entry("news.test", None, "bob@y.test")]
        );
        assert_eq!(
            find(
                store,
                filter(None, ListMatch::Id("weekly.news.test".into()))
            )
            .await,
            [entry("news.test", Some("weekly.news.test"), "bob@y.test")]
        );
        assert!(
            find(store, filter(Some("other.test"), ListMatch::Any))
                .await
                .is_empty(),
            "{name}"
        );

        // Removing the list's entry leaves the domain's, and the other way round.
        let one_list = filter(Some("news.test"), ListMatch::Id("weekly.news.test".into()));
        assert_eq!(store.remove_suppressions(&one_list).await.unwrap(), 1);
        assert_eq!(
            find(store, filter(None, ListMatch::Any)).await,
            [entry("news.test", None, "bob@y.test")]
        );
        store
            .write(&[unsubscribed(
                "Q1",
                t + 9,
                "bob@y.test",
                Some("weekly.news.test"),
            )])
            .await
            .unwrap();
        assert_eq!(
            store
                .remove_suppressions(&filter(Some("news.test"), ListMatch::Whole))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            find(store, filter(None, ListMatch::Any)).await,
            [entry("news.test", Some("weekly.news.test"), "bob@y.test")],
            "{name}"
        );
        // "Only whole scopes" alone is no condition: nothing removes the whole list.
        assert_eq!(
            store
                .remove_suppressions(&SuppressionFilter {
                    list: ListMatch::Whole,
                    ..Default::default()
                })
                .await
                .unwrap(),
            0
        );
    }
}

/// An unsubscribe for a message the ledger no longer has (pruned: retention, 30 days by
/// default, is shorter than a link's validity, 90 days) still suppresses: the event names
/// the token's sender domain, which is the scope when no `queued` event is there. Without
/// it (an older post office's event) nothing can be scoped and nothing is added.
#[tokio::test]
async fn an_unsubscribe_for_a_pruned_message_uses_the_tokens_sender_domain() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 230, 22)).await;
    for (name, store) in stores.each() {
        let t = 2_000_000;
        let mut named = unsubscribed("GONE1", t, "Carol@Z.test", Some("weekly.news.test"));
        if let What::Recipient(r) = &mut named.what {
            r.sender_domain = Some("News.test".into());
        }
        let unnamed = unsubscribed("GONE2", t, "dave@z.test", None);
        store.write(&[named, unnamed]).await.unwrap();
        let all = SuppressionFilter {
            limit: Some(1000),
            ..Default::default()
        };
        assert_eq!(
            find(store, all).await,
            [entry("news.test", Some("weekly.news.test"), "carol@z.test")],
            "{name}"
        );
    }
}
