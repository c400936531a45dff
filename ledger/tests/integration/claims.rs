//! The shared duplicate-id window on both stores: claim, complete, release, takeover of
//! abandoned and expired claims, pruning, concurrent claimers (exactly one wins), and an old
//! (version 1) database migrated to a table of claims.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hedwig_ledger::{schema, ClaimLimits, Claimed, Store};
use sqlx::Executor;

use crate::common::Stores;

const LIMITS: ClaimLimits = ClaimLimits {
    window: Duration::from_secs(3600),
    stale_after: Duration::from_secs(60),
};
const T0: u64 = 1_800_000_000_000;

#[tokio::test]
async fn claim_complete_release_and_takeovers() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 70)).await;
    for (name, store) in stores.each() {
        // First claim wins; another claimer sees it pending, then queued.
        assert_eq!(
            store.claim("web1", "m1", "A", T0, LIMITS).await.unwrap(),
            Claimed::Won,
            "{name}"
        );
        assert_eq!(
            store
                .claim("web1", "m1", "B", T0 + 5, LIMITS)
                .await
                .unwrap(),
            Claimed::Pending {
                claimed_by: "A".into(),
                claimed_at: T0
            },
            "{name}"
        );
        assert!(!store
            .complete_claim("web1", "m1", "B", "QB", T0 + 20)
            .await
            .unwrap());
        assert!(store
            .complete_claim("web1", "m1", "A", "QA", T0 + 20)
            .await
            .unwrap());
        assert!(
            !store
                .complete_claim("web1", "m1", "A", "QA2", T0 + 20)
                .await
                .unwrap(),
            "{name}: completed once"
        );
        for claimer in ["A", "B"] {
            assert_eq!(
                store
                    .claim("web1", "m1", claimer, T0 + 10, LIMITS)
                    .await
                    .unwrap(),
                Claimed::Queued("QA".into()),
                "{name}: {claimer}"
            );
        }
        // The same id of another host is another claim.
        assert_eq!(
            store.claim("web2", "m1", "B", T0, LIMITS).await.unwrap(),
            Claimed::Won
        );
        let row = store.claimed("web1", "m1").await.unwrap().unwrap();
        assert_eq!(
            (
                row.queue_id.as_deref(),
                row.claimed_by.as_str(),
                row.claimed_at
            ),
            (Some("QA"), "A", T0)
        );

        // Released (queueing failed): the next claimer wins. Only the holder releases.
        assert_eq!(
            store.claim("web1", "m2", "A", T0, LIMITS).await.unwrap(),
            Claimed::Won
        );
        assert!(!store.release_claim("web1", "m2", "B").await.unwrap());
        assert!(store.release_claim("web1", "m2", "A").await.unwrap());
        assert!(store.claimed("web1", "m2").await.unwrap().is_none());
        assert_eq!(
            store
                .claim("web1", "m2", "B", T0 + 1, LIMITS)
                .await
                .unwrap(),
            Claimed::Won
        );

        // A completion without a claim (the claim statement timed out before it ran)
        // records the id as queued; one that another claimer holds does not.
        assert!(store
            .complete_claim("web3", "m9", "A", "Q9", T0)
            .await
            .unwrap());
        assert_eq!(
            store
                .claim("web3", "m9", "B", T0 + 1, LIMITS)
                .await
                .unwrap(),
            Claimed::Queued("Q9".into()),
            "{name}"
        );

        // A claimer's own pending claim (it released nothing: the store was down) is its
        // again; a completed one is not.
        assert_eq!(
            store
                .claim("web1", "m2", "B", T0 + 2, LIMITS)
                .await
                .unwrap(),
            Claimed::Won
        );
        assert_eq!(
            store
                .claim("web1", "m1", "A", T0 + 2, LIMITS)
                .await
                .unwrap(),
            Claimed::Queued("QA".into())
        );

        // Abandoned: pending past stale_after, taken over; the old holder cannot complete.
        let late = T0 + 2 + LIMITS.stale_after.as_millis() as u64 + 1;
        assert!(matches!(
            store
                .claim("web1", "m2", "C", late - 2, LIMITS)
                .await
                .unwrap(),
            Claimed::Pending { .. }
        ));
        assert_eq!(
            store.claim("web1", "m2", "C", late, LIMITS).await.unwrap(),
            Claimed::Won,
            "{name}"
        );
        assert!(!store
            .complete_claim("web1", "m2", "B", "QB", T0 + 20)
            .await
            .unwrap());
        assert!(store
            .complete_claim("web1", "m2", "C", "QC", T0 + 20)
            .await
            .unwrap());

        // Past the window a queued id is forgotten: claimed anew.
        let expired = T0 + LIMITS.window.as_millis() as u64 + 1;
        assert_eq!(
            store
                .claim("web1", "m1", "B", expired, LIMITS)
                .await
                .unwrap(),
            Claimed::Won,
            "{name}"
        );
        let row = store.claimed("web1", "m1").await.unwrap().unwrap();
        assert_eq!((row.queue_id, row.claimed_by), (None, "B".to_owned()));
    }
}

#[tokio::test]
async fn prune_deletes_old_claims_in_batches() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 71)).await;
    for (name, store) in stores.each() {
        for i in 0..25u64 {
            let id = format!("m{i}");
            assert_eq!(
                store.claim("web1", &id, "A", T0 + i, LIMITS).await.unwrap(),
                Claimed::Won
            );
            if i % 2 == 0 {
                assert!(store
                    .complete_claim("web1", &id, "A", "Q", T0 + 20)
                    .await
                    .unwrap());
            }
        }
        // Older than T0 + 20: m0..m19, pending or not, in batches of 3.
        assert_eq!(store.prune_claims(T0 + 20, 3).await.unwrap(), 20, "{name}");
        assert!(store.claimed("web1", "m19").await.unwrap().is_none());
        assert!(store.claimed("web1", "m20").await.unwrap().is_some());
        assert_eq!(store.prune_claims(T0 + 20, 3).await.unwrap(), 0);
        assert_eq!(store.prune_claims(u64::MAX, 1000).await.unwrap(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_exactly_one_wins() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 72)).await;
    // Two claimers, each its own pool (two post offices), 8 at once on PostgreSQL.
    let other_pg = Store::open(&stores.pg.url()).await.unwrap();
    let other_sqlite = Store::open(&stores.sqlite_url).await.unwrap();
    for (name, a, b) in [
        ("postgres", stores.postgres.clone(), other_pg),
        ("sqlite", stores.sqlite.clone(), other_sqlite),
    ] {
        for round in 0..40 {
            let id = Arc::new(format!("race-{round}"));
            let mut tasks = Vec::new();
            for claimer in 0..8 {
                let store = if claimer % 2 == 0 {
                    a.clone()
                } else {
                    b.clone()
                };
                let id = id.clone();
                tasks.push(tokio::spawn(async move {
                    let me = format!("PO{claimer}");
                    let claimed = store.claim("web1", &id, &me, T0, LIMITS).await.unwrap();
                    (me, claimed)
                }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                let (me, claimed) = task.await.unwrap();
                match claimed {
                    Claimed::Won => winners.push(me),
                    Claimed::Pending { .. } => {}
                    other => panic!("{name}: {other:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "{name} round {round}: {winners:?}");
            let row = a.claimed("web1", &id).await.unwrap().unwrap();
            assert_eq!(row.claimed_by, winners[0], "{name}");
        }
    }
}

#[tokio::test]
async fn a_version_1_database_gets_the_claims_table() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 73)).await;
    let sqlite_url = format!("sqlite://{}/v1.db?mode=rwc", stores.dir.path().display());
    pg_create_database(&stores, "v1").await;
    for url in [sqlite_url, stores.pg.url_of("v1")] {
        // The database as the first ledger release left it.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        pool.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            .await
            .unwrap();
        for statement in schema::migration(0).unwrap() {
            pool.execute(*statement).await.unwrap();
        }
        pool.execute("INSERT INTO schema_version (version) VALUES (1)")
            .await
            .unwrap();
        assert!(pool.execute("SELECT 1 FROM claims").await.is_err());
        pool.close().await;

        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), schema::VERSION);
        assert_eq!(
            store.claim("web1", "m1", "A", T0, LIMITS).await.unwrap(),
            Claimed::Won,
            "{url}"
        );
    }
}

/// Makes another database on the test server (as its superuser).
async fn pg_create_database(stores: &Stores, name: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&stores.pg.url_of("postgres"))
        .await
        .unwrap();
    pool.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    pool.close().await;
}
