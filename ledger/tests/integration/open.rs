//! Opening a store: the schema is made once and found again; a newer schema is refused.

use std::net::Ipv4Addr;

use hedwig_ledger::{schema, Store, StoreError};
use sqlx::Executor;

use crate::common::{queued, Stores};

#[tokio::test]
async fn opens_migrates_once_and_reopens_with_its_data() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 10)).await;
    // The SQLite file was made, with its directory.
    assert!(stores.dir.path().join("sub/ledger.db").exists());
    for (url, store) in [
        (stores.sqlite_url.clone(), &stores.sqlite),
        (stores.pg.url(), &stores.postgres),
    ] {
        assert_eq!(store.schema_version().await.unwrap(), schema::VERSION);
        store
            .write(&[queued("Q1", 1_000, "web1", "a@x.test", &["b@y.test"])])
            .await
            .unwrap();
        store.close().await;

        let again = Store::open(&url).await.expect("reopen");
        assert_eq!(
            again.schema_version().await.unwrap(),
            schema::VERSION,
            "{url}"
        );
        assert!(again.timeline("Q1").await.unwrap().is_some(), "{url}");
        assert_eq!(again.event_count().await.unwrap(), 1);

        // A database migrated by a newer build is not touched.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        pool.execute("UPDATE schema_version SET version = 99")
            .await
            .unwrap();
        pool.close().await;
        match Store::open(&url).await {
            Err(StoreError::Schema { found: 99, known }) => assert_eq!(known, schema::VERSION),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers() {
    assert!(matches!(
        Store::open("mysql://x/y").await,
        Err(StoreError::Url(_))
    ));
    // A port nothing listens on: unavailable, not a panic or a hang.
    let port = hedwig_testkit::net::free_port(Ipv4Addr::new(127, 0, 130, 11));
    let url = format!("postgres://hedwig@127.0.130.11:{port}/hedwig");
    let options = hedwig_ledger::Options {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let err = Store::open_with(&url, options).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/l.db", dir.path().display());
    let _store = Store::open(&url).await.unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let row = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mode: String = sqlx::Row::try_get(&row, 0).unwrap();
    assert_eq!(mode, "wal");
}

/// A database of the version before the `edge_id` index (2) gets it at open, and lookups by
/// mailman's message id find its messages.
#[tokio::test]
async fn a_version_2_database_gets_the_edge_id_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v2.db?mode=rwc", dir.path().display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    pool.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        .await
        .unwrap();
    for from in 0..2 {
        for statement in schema::migration(from).unwrap() {
            pool.execute(*statement).await.unwrap();
        }
    }
    pool.execute("INSERT INTO schema_version (version) VALUES (2)")
        .await
        .unwrap();
    pool.close().await;

    let url = format!("sqlite://{}/v2.db", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), schema::VERSION);
    store
        .write(&[queued("Q1", 1_000, "web1", "a@x.test", &["b@y.test"])])
        .await
        .unwrap();
    let page = store
        .search(&hedwig_ledger::Filter {
            edge_id: Some("edge-Q1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    store.close().await;
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages_edge_id'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let n: i64 = sqlx::Row::try_get(&row, 0).unwrap();
    assert_eq!(n, 1, "the index is made by the migration");
}

/// A database from before issue 17 (version 5) keeps its messages at open and gains the
/// `app` and `lane` columns: old rows read with neither, new ones store both.
#[tokio::test]
async fn a_version_5_database_gains_app_and_lane() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v5.db?mode=rwc", dir.path().display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    pool.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        .await
        .unwrap();
    for from in 0..5 {
        for statement in schema::migration(from).unwrap() {
            pool.execute(*statement).await.unwrap();
        }
    }
    pool.execute("INSERT INTO schema_version (version) VALUES (5)")
        .await
        .unwrap();
    pool.execute(
        "INSERT INTO messages (queue_id, host, sender, kind, queued_at, recipients, status, \
         last_event_at) VALUES ('OLD', 'web1', 'a@x.test', 'message', 1000, 1, 'queued', 1000)",
    )
    .await
    .unwrap();
    pool.close().await;

    let url = format!("sqlite://{}/v5.db", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), schema::VERSION);
    let old = store.timeline("OLD").await.unwrap().expect("the old row");
    assert_eq!((old.message.app, old.message.lane), (None, None));
    let mut event = queued("NEW", 2_000, "web1", "a@x.test", &["b@y.test"]);
    if let hedwig_queue::event::What::Queued(q) = &mut event.what {
        q.app = Some("shop-billing-1".into());
        q.lane = Some("transactional".into());
    }
    store.write(&[event]).await.unwrap();
    let new = store.timeline("NEW").await.unwrap().expect("the new row");
    assert_eq!(new.message.app.as_deref(), Some("shop-billing-1"));
    assert_eq!(new.message.lane.as_deref(), Some("transactional"));
    store.close().await;
}

/// `migrate: false` (what `postoffice check-config` uses) opens an older database as it is:
/// a version-5 file stays at version 5; a database newer than this build is still refused;
/// an empty one (no `schema_version` table) opens and gains nothing.
#[tokio::test]
async fn opening_without_migrating_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v5.db?mode=rwc", dir.path().display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    pool.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        .await
        .unwrap();
    for from in 0..5 {
        for statement in schema::migration(from).unwrap() {
            pool.execute(*statement).await.unwrap();
        }
    }
    pool.execute("INSERT INTO schema_version (version) VALUES (5)")
        .await
        .unwrap();
    pool.close().await;

    let url = format!("sqlite://{}/v5.db", dir.path().display());
    let check = hedwig_ledger::Options {
        create: false,
        migrate: false,
        ..Default::default()
    };
    let store = Store::open_with(&url, check.clone()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    store.close().await;

    // Newer than this build: refused, and still untouched.
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    pool.execute("UPDATE schema_version SET version = 999")
        .await
        .unwrap();
    pool.close().await;
    let err = Store::open_with(&url, check.clone()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Schema { found: 999, .. }),
        "{err:?}"
    );

    // An empty database: opens, and no table is made.
    let empty = format!("sqlite://{}/empty.db?mode=rwc", dir.path().display());
    let pool = sqlx::AnyPool::connect(&empty).await.unwrap();
    pool.execute("CREATE TABLE unrelated (x INTEGER)")
        .await
        .unwrap();
    pool.close().await;
    let empty = format!("sqlite://{}/empty.db", dir.path().display());
    let store = Store::open_with(&empty, check).await.unwrap();
    store.close().await;
    let pool = sqlx::AnyPool::connect(&empty).await.unwrap();
    let tables: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
    );
    assert_eq!(tables, 1, "only the table that was there");
}

/// A database from before issue 19's fix-ups (version 6), on SQLite and on PostgreSQL, keeps
/// its messages at open and gains the `fixups` column: old rows read with none, new ones
/// store the list in order.
#[tokio::test]
async fn a_version_6_database_gains_fixups() {
    let dir = tempfile::tempdir().unwrap();
    let pg = hedwig_testkit::Postgres::start_on(Ipv4Addr::new(127, 0, 220, 40));
    sqlx::any::install_default_drivers();
    for (create, open) in [
        (
            format!("sqlite://{}/v6.db?mode=rwc", dir.path().display()),
            format!("sqlite://{}/v6.db", dir.path().display()),
        ),
        (pg.url(), pg.url()),
    ] {
        let pool = sqlx::AnyPool::connect(&create).await.unwrap();
        pool.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            .await
            .unwrap();
        for from in 0..6 {
            for statement in schema::migration(from).unwrap() {
                pool.execute(*statement).await.unwrap();
            }
        }
        pool.execute("INSERT INTO schema_version (version) VALUES (6)")
            .await
            .unwrap();
        pool.execute(
            "INSERT INTO messages (queue_id, host, sender, kind, queued_at, recipients, status, \
             last_event_at, app, lane) VALUES ('OLD', 'web1', 'a@x.test', 'message', 1000, 1, \
             'queued', 1000, 'shop-billing-1', 'bulk')",
        )
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open(&open).await.unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            schema::VERSION,
            "{open}"
        );
        let old = store.timeline("OLD").await.unwrap().expect("the old row");
        assert!(old.message.fixups.is_empty(), "{open}");
        assert_eq!(old.message.lane.as_deref(), Some("bulk"), "{open}");
        let mut event = queued("NEW", 2_000, "web1", "a@x.test", &["b@y.test"]);
        if let hedwig_queue::event::What::Queued(q) = &mut event.what {
            q.fixups = vec![
                "date".into(),
                "message-id".into(),
                "from".into(),
                "to".into(),
            ];
        }
        store
            .write(&[
                event,
                queued("NONE", 2_001, "web1", "a@x.test", &["b@y.test"]),
            ])
            .await
            .unwrap();
        let new = store.timeline("NEW").await.unwrap().expect("the new row");
        assert_eq!(
            new.message.fixups,
            ["date", "message-id", "from", "to"],
            "{open}"
        );
        let none = store.timeline("NONE").await.unwrap().expect("the row");
        assert!(none.message.fixups.is_empty(), "{open}");
        // and a search reads the column too
        let page = store
            .search(&hedwig_ledger::Filter {
                host: Some("web1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let found = page
            .messages
            .iter()
            .find(|m| m.queue_id == "NEW")
            .expect("NEW in the search");
        assert_eq!(found.fixups, ["date", "message-id", "from", "to"], "{open}");
        store.close().await;
    }
}
