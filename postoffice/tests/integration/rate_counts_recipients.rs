//! The rate limit counts recipients, not posts (issue 11 F4): one post to 1,000 recipients
//! was one token, so a host with a limit of 60 a minute could still hand over 60,000
//! deliveries (and bounces) a minute. Now a post to n recipients takes n tokens, all or none;
//! a post with more recipients than the bucket holds is refused for good (403, so mailman
//! does not retry it forever); and the default policy has a finite limit (600 recipients a
//! minute, burst 600).

use hedwig_core::key::derive_key;

use crate::common::{config, email, PostOffice, HOST, SECRET};

fn rcpts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i}@example.org")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn a_post_takes_one_token_per_recipient() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = config(&beanstalkd);
    config.hosts.insert(
        HOST.into(),
        postoffice::config::HostPolicy {
            rate_per_minute: 10,
            rate_burst: Some(10),
            ..postoffice::config::HostPolicy::default()
        },
    );
    let po = PostOffice::start_with(beanstalkd, config).await;
    let six = rcpts(6);
    let (status, body) = po.send(email(&refs(&six), "x")).await;
    assert_eq!(status, 200, "{body}");
    // 4 tokens left: 6 more recipients are over the limit, and take none of the 4.
    let (status, body) = po.send(email(&refs(&six), "x")).await;
    assert_eq!(status, 429, "a second post to 6 recipients: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("6 recipients"),
        "{body}"
    );
    // More recipients than the bucket holds can never pass: refused for good, clearly.
    let (status, body) = po.send(email(&refs(&rcpts(11)), "x")).await;
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("11 recipients exceed this host's rate burst of 10"),
        "{error}"
    );
    let (status, body) = po.send(email(&refs(&rcpts(4)), "x")).await;
    assert_eq!(status, 200, "the 4 tokens left: {body}");
    assert_eq!(po.ready_count().await, 2);
}

#[tokio::test]
async fn the_default_policy_allows_600_recipients_a_minute() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let config = config(&beanstalkd);
    let po = PostOffice::start_with(beanstalkd, config).await;
    let (status, body) = po.send(email(&refs(&rcpts(600)), "x")).await;
    assert_eq!(status, 200, "{body}");
    // The bucket refills at 10 recipients a second: 100 more need 10 s, far longer than the
    // time between two posts even on a loaded machine (a single recipient could refill in
    // the 100 ms a loaded machine may take between them).
    let (status, body) = po.send(email(&refs(&rcpts(100)), "x")).await;
    assert_eq!(status, 429, "100 more recipients within the minute: {body}");
    // Another host has its own bucket, but it is no larger.
    let other = "web2.example.com";
    let key = derive_key(SECRET, other);
    let data = email(&refs(&rcpts(1000)), "x").to_string();
    let (status, body) = po
        .post_form(&[("fqdn", other), ("key", &key), ("email", &data)])
        .await;
    assert_eq!(status, 403, "1,000 recipients at once: {body}");
    assert_eq!(po.ready_count().await, 1);
}
