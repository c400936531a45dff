//! The intake's hold cache: union over servers, refreshed after its ttl, last known list
//! kept while a server is down. And the list writer keeps exactly one buried job, in the
//! holds tube of the configured prefix.

use std::time::Duration;

use hedwig_queue::hold::{self as holds, HoldCache};
use hedwig_queue::Tubes;

#[tokio::test]
async fn cache_refreshes_and_survives_an_outage() {
    let mut a = hedwig_testkit::Beanstalkd::start();
    let b = hedwig_testkit::Beanstalkd::start();
    let mut ca = beanstalk::Client::connect(a.url()).await.unwrap();
    let mut cb = beanstalk::Client::connect(b.url()).await.unwrap();
    let tubes = Tubes::new("hc").unwrap();
    assert!(
        holds::read(&mut ca, &tubes).await.unwrap().is_empty(),
        "no job: nothing held"
    );

    let ttl = Duration::from_millis(800);
    let cache = HoldCache::with_ttl(
        [a.url(), b.url()].iter().map(String::as_str),
        tubes.clone(),
        ttl,
    );
    assert!(!cache.is_held("x.example").await);

    holds::update(&mut ca, &tubes, |l| l.hold("x.example"))
        .await
        .unwrap();
    holds::update(&mut cb, &tubes, |l| l.hold("y.example"))
        .await
        .unwrap();
    assert!(!cache.is_held("x.example").await, "cached for ttl");
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(cache.is_held("x.example").await, "union: from A");
    assert!(cache.is_held("Y.example.").await, "union: from B");

    a.stop();
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(
        cache.is_held("x.example").await,
        "A's last list kept while A is down"
    );

    // Writes leave one buried job, and the list's user tube is restored.
    cb.use_tube("mine").await.unwrap();
    for host in ["1.example", "2.example", "3.example"] {
        holds::update(&mut cb, &tubes, |l| l.hold(host))
            .await
            .unwrap();
    }
    holds::update(&mut cb, &tubes, |l| Ok(l.release("2.example")))
        .await
        .unwrap();
    assert_eq!(cb.used_tube(), "mine");
    assert_eq!(cb.list_tube_used().await.unwrap(), "mine");
    let stats = cb.stats_tube("hc-holds").await.unwrap();
    assert_eq!(stats.current_jobs_buried(), Some(1));
    let list = holds::read(&mut cb, &tubes).await.unwrap();
    assert_eq!(
        list.hosts().collect::<Vec<_>>(),
        ["1.example", "3.example", "y.example"]
    );
    assert!(
        matches!(
            cb.stats_tube("hedwig-holds").await,
            Err(beanstalk::Error::NotFound)
        ),
        "nothing written under the default prefix"
    );
}
