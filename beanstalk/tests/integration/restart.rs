//! beanstalkd is killed and restarted with its binlog: queued jobs survive, and the same
//! Client and Pool work again after at most a couple of failed calls, with the client's
//! used and watched tubes restored on the new connection.

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Pool};

const TTR: Duration = Duration::from_secs(60);

/// Calls `f` until it succeeds, at most 3 times; returns the result and the failure count.
macro_rules! until_ok {
    ($e:expr) => {{
        let mut failures = 0;
        loop {
            match $e {
                Ok(v) => break (v, failures),
                Err(e) => {
                    failures += 1;
                    assert!(failures <= 2, "still failing after {failures} calls: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }};
}

#[tokio::test]
async fn client_survives_restart() {
    let mut server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    c.use_tube("mail").await.unwrap();
    c.watch("mail").await.unwrap();
    c.ignore("default").await.unwrap();
    let id = c.put(b"kept\r\n\0", 0, Duration::ZERO, TTR).await.unwrap();

    common::restart(&mut server);
    let (stats, failures) = until_ok!(c.stats_job(id).await);
    eprintln!("client: {failures} failed calls after restart");
    assert_eq!(stats.tube(), Some("mail"));
    assert!(c.is_connected());
    assert_eq!(c.list_tube_used().await.unwrap(), "mail");
    assert_eq!(c.list_tubes_watched().await.unwrap(), vec!["mail"]);
    let job = c
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((job.id, &job.body[..]), (id, &b"kept\r\n\0"[..]));

    // A restart while a job is reserved: the reservation is gone with the connection,
    // the job is back in the ready queue, and touch on the new connection is NOT_FOUND.
    common::restart(&mut server);
    let (_, _) = until_ok!(c.list_tube_used().await);
    assert!(matches!(c.touch(id).await, Err(beanstalk::Error::NotFound)));
    let job = c
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(job.id, id);
    c.delete(id).await.unwrap();
}

#[tokio::test]
async fn client_call_fails_while_server_is_down_then_recovers() {
    let mut server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    server.stop();
    let err = c.put(b"x", 0, Duration::ZERO, TTR).await.unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    assert!(!c.is_connected());
    let err = c.stats().await.unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    common::restart(&mut server);
    let id = c.put(b"x", 0, Duration::ZERO, TTR).await.unwrap();
    assert_eq!(c.peek(id).await.unwrap().body, &b"x"[..]);
}

#[tokio::test]
async fn pool_survives_restart() {
    let mut server = common::start();
    let pool = Pool::new(server.url(), "mail", 4).unwrap();
    // Fill the idle list with several connections.
    let held: Vec<_> = futures_join(&pool, 4).await;
    drop(held);
    assert_eq!(pool.idle_count(), 4);
    let before = pool.put(b"before", 0, Duration::ZERO, TTR).await.unwrap();

    common::restart(&mut server);
    let mut total_failures = 0;
    for i in 0..10 {
        let (_, failures) = until_ok!(
            pool.put(format!("after {i}").as_bytes(), 0, Duration::ZERO, TTR)
                .await
        );
        total_failures += failures;
    }
    eprintln!("pool: {total_failures} failed puts after restart");
    assert!(total_failures <= 2);
    let mut admin = Client::connect(server.url()).await.unwrap();
    assert_eq!(admin.peek(before).await.unwrap().body, &b"before"[..]);
    assert_eq!(
        admin.stats_tube("mail").await.unwrap().current_jobs_ready(),
        Some(11)
    );
}

async fn futures_join(pool: &Pool, n: usize) -> Vec<beanstalk::PooledClient> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get().await.unwrap());
    }
    out
}
