//! The life of a job after reserve: touch, release with delay, bury, kick, kick-job, and
//! the stats-job fields that track it.

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Error};

const TTR: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn release_bury_kick_touch() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    let id = c.put(b"job", 7, Duration::ZERO, TTR).await.unwrap();

    let job = c.reserve_with_timeout(WAIT).await.unwrap();
    assert_eq!(job.id, id);
    c.touch(id).await.unwrap();
    assert_eq!(c.stats_job(id).await.unwrap().state(), Some("reserved"));

    // Release with a delay: delayed, invisible to reserve, visible to peek-delayed.
    c.release(id, 9, Duration::from_secs(60)).await.unwrap();
    let s = c.stats_job(id).await.unwrap();
    assert_eq!(s.state(), Some("delayed"));
    assert_eq!(s.pri(), Some(9));
    assert_eq!(s.releases(), Some(1));
    assert_eq!(s.reserves(), Some(1));
    assert_eq!(c.peek_delayed().await.unwrap().id, id);
    assert!(matches!(c.peek_ready().await, Err(Error::NotFound)));
    assert!(matches!(
        c.reserve_with_timeout(Duration::ZERO).await,
        Err(Error::TimedOut)
    ));
    // kick moves delayed jobs when nothing is buried.
    assert_eq!(c.kick(10).await.unwrap(), 1);
    assert_eq!(c.peek_ready().await.unwrap().id, id);

    // Bury, peek-buried, kick-job.
    let job = c.reserve_with_timeout(WAIT).await.unwrap();
    c.bury(job.id, 3).await.unwrap();
    let s = c.stats_job(id).await.unwrap();
    assert_eq!(
        (s.state(), s.buries(), s.pri()),
        (Some("buried"), Some(1), Some(3))
    );
    assert_eq!(c.peek_buried().await.unwrap().body, &b"job"[..]);
    c.kick_job(id).await.unwrap();
    assert_eq!(
        c.stats_job(id).await.unwrap().kicks(),
        Some(2),
        "kicked from delayed, then from buried"
    );
    assert!(
        matches!(c.kick_job(id).await, Err(Error::NotFound)),
        "ready jobs cannot be kicked"
    );

    // Bury again, kick by bound.
    let job = c.reserve_with_timeout(WAIT).await.unwrap();
    c.bury(job.id, 3).await.unwrap();
    assert_eq!(c.kick(10).await.unwrap(), 1);
    assert_eq!(c.kick(10).await.unwrap(), 0);

    // Released with no delay: ready again at once, reservable by the same connection.
    let job = c.reserve_with_timeout(WAIT).await.unwrap();
    c.release(job.id, 0, Duration::ZERO).await.unwrap();
    let job = c.reserve_with_timeout(WAIT).await.unwrap();
    assert_eq!(c.stats_job(job.id).await.unwrap().reserves(), Some(5));
    c.delete(job.id).await.unwrap();
}

#[tokio::test]
async fn only_the_reserving_connection_may_touch_or_release() {
    let server = common::start();
    let mut worker = Client::connect(server.url()).await.unwrap();
    let mut other = Client::connect(server.url()).await.unwrap();
    let id = other.put(b"x", 0, Duration::ZERO, TTR).await.unwrap();
    let job = worker.reserve_with_timeout(WAIT).await.unwrap();
    assert_eq!(job.id, id);
    assert!(matches!(other.touch(id).await, Err(Error::NotFound)));
    assert!(matches!(
        other.release(id, 0, Duration::ZERO).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(other.bury(id, 0).await, Err(Error::NotFound)));
    assert!(matches!(other.delete(id).await, Err(Error::NotFound)));
    worker.delete(id).await.unwrap();
}
