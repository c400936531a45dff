//! NOT_FOUND, TIMED_OUT and DEADLINE_SOON come back as their own variants and leave the
//! connection usable.

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Error};

#[tokio::test]
async fn not_found_timed_out_deadline_soon() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();

    assert!(matches!(c.peek(12345).await, Err(Error::NotFound)));
    assert!(matches!(c.peek_ready().await, Err(Error::NotFound)));
    assert!(matches!(c.peek_delayed().await, Err(Error::NotFound)));
    assert!(matches!(c.peek_buried().await, Err(Error::NotFound)));
    assert!(matches!(c.delete(12345).await, Err(Error::NotFound)));
    assert!(matches!(c.touch(12345).await, Err(Error::NotFound)));
    assert!(matches!(c.stats_job(12345).await, Err(Error::NotFound)));
    assert!(matches!(c.stats_tube("nosuch").await, Err(Error::NotFound)));
    assert!(matches!(c.reserve_job(12345).await, Err(Error::NotFound)));
    let err = c
        .reserve_with_timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TimedOut), "{err}");
    assert!(!err.is_connection_error());
    assert!(c.is_connected());

    // A reserved job with TTR 1s: the next reserve says DEADLINE_SOON (within a second).
    let id = c
        .put(b"x", 0, Duration::ZERO, Duration::from_secs(1))
        .await
        .unwrap();
    c.reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let err = c
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeadlineSoon), "{err}");
    // Either still ours or already timed out back to ready: delete works both ways.
    c.delete(id).await.unwrap();
}

#[tokio::test]
async fn draining_refuses_puts_on_a_healthy_connection() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    let pid = c.stats().await.unwrap().get_u64("pid").unwrap();
    // beanstalkd enters drain mode on SIGUSR1.
    let status = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut drained = false;
    for _ in 0..50 {
        if c.stats().await.unwrap().get("draining") == Some("true") {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(drained, "server did not enter drain mode");
    let err = c
        .put(b"x", 0, Duration::ZERO, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Draining), "{err}");
    assert!(!err.is_connection_error());
    assert!(c.is_connected());
    assert_eq!(c.list_tube_used().await.unwrap(), "default");
}
