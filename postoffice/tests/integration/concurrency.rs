//! 1,000 concurrent requests (bounded) produce exactly 1,000 jobs.

use std::sync::Arc;

use crate::common::{config, email, PostOffice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_posts_make_thousand_jobs() {
    // Concurrency, not the rate limit (`rate_counts_recipients.rs`): no limit for this host.
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = config(&beanstalkd);
    config.default_policy.rate_per_minute = 0;
    let po = Arc::new(PostOffice::start_with(beanstalkd, config).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let po = po.clone();
        tasks.spawn(async move {
            let body = format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
            po.send(email(&["u@example.org"], &body)).await
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        assert_eq!(status, 200, "{body}");
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1000, "every queue id distinct");
    assert_eq!(po.ready_count().await, 1000);
}
