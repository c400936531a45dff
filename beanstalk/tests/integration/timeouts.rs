//! The per-command I/O timeout against a server that accepts and never answers, reserve
//! waiting past that timeout, and a cancelled call leaving the client usable.

use crate::common;

use std::time::{Duration, Instant};

use beanstalk::{Client, Config, Error};

fn config(io: Duration) -> Config {
    Config {
        io_timeout: Some(io),
        connect_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

#[tokio::test]
async fn hung_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..2 {
            let (sock, _) = listener.accept().await.unwrap();
            held.push(sock);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(held);
    });
    let mut c = Client::connect_with(addr.to_string(), config(Duration::from_millis(300)))
        .await
        .unwrap();
    let start = Instant::now();
    let err = c.stats().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(err.is_connection_error());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!c.is_connected());
    // Nothing listening behind the stalled server: the next call reconnects and times out too.
    let err = c
        .put(b"x", 0, Duration::ZERO, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    hold.abort();
}

#[tokio::test]
async fn reserve_waits_past_io_timeout_and_cancel_is_safe() {
    let server = common::start();
    // Generous: the machine is shared, and a reconnect plus put must fit in it.
    let io = Duration::from_secs(1);
    let mut c = Client::connect_with(server.url(), config(io))
        .await
        .unwrap();

    // reserve-with-timeout longer than the I/O timeout ends in TIMED_OUT, not Timeout.
    let err = c
        .reserve_with_timeout(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TimedOut), "{err}");

    // reserve without timeout is still waiting after 3x the I/O timeout; cancel it.
    let waited = tokio::time::timeout(3 * io, c.reserve()).await;
    assert!(waited.is_err(), "reserve returned early: {waited:?}");
    assert!(
        !c.is_connected(),
        "a cancelled call leaves the connection out of step"
    );

    // The next call reconnects; the cancelled reserve cannot swallow this job.
    let id = c
        .put(b"after cancel", 0, Duration::ZERO, Duration::from_secs(10))
        .await
        .unwrap();
    let job = c
        .reserve_with_timeout(Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(job.id, id);
    c.delete(id).await.unwrap();
}
