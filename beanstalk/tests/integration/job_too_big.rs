//! JOB_TOO_BIG on a server started with a small `-z`: typed, and the same connection keeps
//! working (the client sent the whole body, so both ends stay in step).

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Error};

#[tokio::test]
async fn job_too_big_leaves_connection_usable() {
    let server = common::start_with_max_job_size(1000);
    let mut c = Client::connect(server.url()).await.unwrap();
    assert_eq!(c.stats().await.unwrap().max_job_size(), Some(1000));
    let ttr = Duration::from_secs(5);

    // Just over the limit, and far over it (the body is written in several pieces).
    for size in [1001, 200_000] {
        let body = vec![b'\n'; size];
        let err = c.put(&body, 0, Duration::ZERO, ttr).await.unwrap_err();
        assert!(matches!(err, Error::JobTooBig), "{size}: {err}");
        assert!(!err.is_connection_error());
        assert!(c.is_connected());
        let id = c.put(&[b'\r'; 1000], 0, Duration::ZERO, ttr).await.unwrap();
        assert_eq!(c.peek(id).await.unwrap().body.len(), 1000);
        c.delete(id).await.unwrap();
    }
    let s = c.stats().await.unwrap();
    assert_eq!(s.total_jobs(), Some(2));
    assert_eq!(s.current_connections(), Some(1), "no reconnect happened");
}
