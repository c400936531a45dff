//! stats, stats-tube and stats-job parsed from a real server.

use crate::common;

use std::time::Duration;

use beanstalk::Client;

#[tokio::test]
async fn stats_commands() {
    let server = common::start_with_max_job_size(4096);
    let mut c = Client::connect(server.url()).await.unwrap();
    c.use_tube("relay").await.unwrap();
    let ttr = Duration::from_secs(30);
    let ready = c.put(b"r", 5, Duration::ZERO, ttr).await.unwrap();
    c.put(b"d", 5, Duration::from_secs(100), ttr).await.unwrap();
    c.put(b"b", 5, Duration::ZERO, ttr).await.unwrap();
    c.watch("relay").await.unwrap();
    let first = c
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first.id, ready);
    let second = c
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    c.bury(second.id, 5).await.unwrap();

    let s = c.stats().await.unwrap();
    assert_eq!(s.max_job_size(), Some(4096));
    assert_eq!(s.get("version"), Some("1.12"));
    assert_eq!(s.current_jobs_reserved(), Some(1));

    let t = c.stats_tube("relay").await.unwrap();
    assert_eq!(t.get("name"), Some("relay"));
    assert_eq!(t.current_jobs_ready(), Some(0));
    assert_eq!(t.current_jobs_delayed(), Some(1));
    assert_eq!(t.current_jobs_reserved(), Some(1));
    assert_eq!(t.current_jobs_buried(), Some(1));
    assert_eq!(t.total_jobs(), Some(3));

    let j = c.stats_job(ready).await.unwrap();
    assert_eq!(j.id(), Some(ready));
    assert_eq!(j.tube(), Some("relay"));
    assert_eq!(j.state(), Some("reserved"));
    assert_eq!(j.pri(), Some(5));
    assert_eq!(j.reserves(), Some(1));
    assert_eq!(j.releases(), Some(0));
    assert!(j.age().is_some_and(|a| a < 60));
    assert_eq!(j.get_u64("ttr"), Some(30));
}
