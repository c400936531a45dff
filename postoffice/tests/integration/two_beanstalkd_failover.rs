//! Two beanstalkd servers, one killed mid-run: every message answered 200 is in exactly one
//! of them (none lost, none twice), each host's mail sits on one server while both are up,
//! and `/health` stays 200 while one answers.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{jobs_in, PostOffice, SECRET};
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::Beanstalkd;

const HOSTS: usize = 8;
const PER_PHASE: usize = 200;

async fn send(po: &PostOffice, i: usize) -> (u16, serde_json::Value) {
    let host = format!("web{}.example.com", i % HOSTS);
    let key = hedwig_core::key::derive_key(SECRET, &host);
    let email = serde_json::json!({
        "mailfrom": "app@example.com", "rcpttos": ["u@example.org"], "data": format!("m{i}")
    })
    .to_string();
    po.post_form(&[("fqdn", &host), ("key", &key), ("email", &email)])
        .await
}

async fn health(po: &PostOffice) -> u16 {
    po.http
        .get(format!("http://{}/health", po.addr))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends messages `range` from 4 concurrent tasks; returns message index -> queue id for
/// each 200 answer, and the count of other answers.
async fn phase(
    po: &Arc<PostOffice>,
    range: std::ops::Range<usize>,
    done: Arc<AtomicUsize>,
) -> (HashMap<usize, String>, usize) {
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let po = po.clone();
        let range = range.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in range.filter(|i| i % 4 == lane) {
                out.push((i, send(&po, i).await));
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }
    let mut accepted = HashMap::new();
    let mut refused = 0;
    for t in tasks {
        for (i, (status, body)) in t.await.unwrap() {
            if status == 200 {
                accepted.insert(i, body["id"].as_str().unwrap().to_owned());
            } else {
                assert_eq!(status, 503, "{body}");
                refused += 1;
            }
        }
    }
    (accepted, refused)
}

#[tokio::test]
async fn one_server_down_nothing_lost_nothing_twice() {
    let mut a = Beanstalkd::start();
    let b = Beanstalkd::start();
    let (a_url, b_url) = (a.url(), b.url());
    let mut config = common::config(&b);
    config.beanstalkd = vec![a_url.clone(), b_url.clone()];
    let po = Arc::new(PostOffice::start_with(b, config).await);
    assert_eq!(health(&po).await, 200);

    let (mut accepted, refused) = phase(&po, 0..PER_PHASE, Default::default()).await;
    assert_eq!(refused, 0);
    // While both are up, each host's mail is on one server only, and both get some.
    let on_a = jobs_in(&a_url, TUBE_OUTBOUND).await;
    let on_b = jobs_in(&b_url, TUBE_OUTBOUND).await;
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "{} / {}",
        on_a.len(),
        on_b.len()
    );
    for job in &on_a {
        assert!(on_b.iter().all(|j| j.envelope.host != job.envelope.host));
    }

    // Kill A (SIGKILL, like a crash) while requests are in flight.
    let done = Arc::new(AtomicUsize::new(0));
    let senders = tokio::spawn({
        let po = po.clone();
        let done = done.clone();
        async move { phase(&po, PER_PHASE..2 * PER_PHASE, done).await }
    });
    for _ in 0..1000 {
        if done.load(Ordering::Relaxed) >= PER_PHASE / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.stop();
    assert!(done.load(Ordering::Relaxed) < PER_PHASE, "killed mid-run");
    let (during, refused_during) = senders.await.unwrap();
    assert_eq!(health(&po).await, 200, "B still answers");
    // After the kill, every host's mail goes to B.
    let (after, refused_after) = phase(&po, 2 * PER_PHASE..3 * PER_PHASE, Default::default()).await;
    assert_eq!(refused_after, 0, "failover to B");
    // At most the puts in flight on A at the kill may be refused (reply lost).
    assert!(refused_during <= 4, "{refused_during}");
    let during_ids: Vec<String> = during.values().cloned().collect();
    accepted.extend(during);
    accepted.extend(after);

    // Count every job on both servers (A restarted from its binlog).
    a.restart();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    let mut hosts: HashMap<String, String> = HashMap::new();
    let mut servers: HashMap<String, String> = HashMap::new();
    for url in [&a_url, &b_url] {
        let mut jobs = Vec::new();
        for _ in 0..50 {
            match tokio::time::timeout(Duration::from_secs(5), jobs_in(url, TUBE_OUTBOUND)).await {
                Ok(j) => {
                    jobs = j;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        for job in jobs {
            *seen.entry(job.envelope.queue_id.clone()).or_default() += 1;
            hosts.insert(job.envelope.queue_id.clone(), job.envelope.host.clone());
            servers.insert(job.envelope.queue_id.clone(), url.to_string());
            bodies.insert(job.envelope.queue_id, job.message);
        }
    }
    // The kill really was mid-run: of the hosts whose server is A, some messages of the
    // second phase landed on A (before the kill) and some on B (after it).
    let a_hosts: std::collections::HashSet<&str> =
        on_a.iter().map(|j| j.envelope.host.as_str()).collect();
    let (mut to_a, mut to_b) = (0, 0);
    for queue_id in &during_ids {
        if a_hosts.contains(hosts[queue_id].as_str()) {
            if servers[queue_id] == a_url {
                to_a += 1;
            } else {
                to_b += 1;
            }
        }
    }
    assert!(
        to_a > 0 && to_b > 0,
        "A-host messages on A {to_a}, failed over to B {to_b}"
    );
    for (i, queue_id) in &accepted {
        assert_eq!(seen.get(queue_id), Some(&1), "message {i} ({queue_id})");
        assert_eq!(bodies[queue_id], format!("m{i}").into_bytes());
    }
    assert!(seen.values().all(|&n| n == 1), "nothing twice");
    assert!(accepted.len() >= 3 * PER_PHASE - 4);
}

#[tokio::test]
async fn health_is_503_only_when_every_server_is_down() {
    let mut a = Beanstalkd::start();
    let b = Beanstalkd::start();
    let mut config = common::config(&b);
    config.beanstalkd = vec![a.url(), b.url()];
    let mut po = PostOffice::start_with(b, config).await;
    assert_eq!(health(&po).await, 200);
    a.stop();
    assert_eq!(health(&po).await, 200);
    po.beanstalkd.stop();
    assert_eq!(health(&po).await, 503);
    let (status, _) = send(&po, 1).await;
    assert_eq!(status, 503);
    a.restart();
    assert_eq!(health(&po).await, 200);
    let mut status = 0;
    for _ in 0..5 {
        status = send(&po, 2).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}
