//! 200 concurrent puts through a Pool of 8 connections: exactly 200 jobs, 200 distinct ids,
//! never more than 8 connections.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use beanstalk::{Client, Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_puts() {
    let server = common::start();
    let pool = Pool::new(server.url(), "outbound", 8).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let body = format!("message {i}\r\n\0");
            pool.put(
                body.as_bytes(),
                100,
                Duration::ZERO,
                Duration::from_secs(60),
            )
            .await
        });
    }
    let mut ids = HashSet::new();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = tasks.join_next().await {
            ids.insert(r.unwrap().unwrap());
        }
    });
    all.await.expect("puts finished in time");
    assert_eq!(ids.len(), 200);
    assert!(pool.idle_count() <= 8);
    assert!(pool.idle_count() >= 1);

    let mut admin = Client::connect(server.url()).await.unwrap();
    let tube = admin.stats_tube("outbound").await.unwrap();
    assert_eq!(tube.current_jobs_ready(), Some(200));
    assert_eq!(
        admin.stats_tube("default").await.unwrap().total_jobs(),
        Some(0)
    );
    let s = admin.stats().await.unwrap();
    // The pool's idle connections plus this one.
    assert!(
        s.current_connections().unwrap() <= 9,
        "{:?}",
        s.current_connections()
    );
    // Ever opened: at most 8 by the pool, this one, and the two start-up probes.
    let total = s.get_u64("total-connections").unwrap();
    assert!(total <= 11, "{total} connections opened");
}

#[tokio::test]
async fn pooled_client_that_changes_tube_is_not_reused() {
    let server = common::start();
    let pool = Pool::new(server.url(), "a", 2).unwrap();
    {
        let mut c = pool.get().await.unwrap();
        assert_eq!(c.list_tube_used().await.unwrap(), "a");
        c.use_tube("b").await.unwrap();
    }
    assert_eq!(pool.idle_count(), 0);
    let mut c = pool.get().await.unwrap();
    assert_eq!(c.list_tube_used().await.unwrap(), "a");
    drop(c);
    assert_eq!(pool.idle_count(), 1);
}
