//! `hold HOST`: the post office queues the host's new mail in the held tube; `release HOST`
//! moves it back to the outbound tube, including mail held by a stale cache during the
//! settle time. The list itself is one buried job per server.

use std::time::{Duration, Instant};

use crate::common::{admin, email, jobs_in, PostOffice, HOST};
use hedwig_queue::hold::HoldList;
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_queue::tubes::{TUBE_HELD, TUBE_HOLDS};

#[tokio::test]
async fn hold_then_release_loses_nothing() {
    let po = PostOffice::start().await;
    let url = po.beanstalkd.url();

    let (ok, out, err) = admin(&["hold", HOST, "--beanstalkd", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("is held"), "{out}");
    let (ok, out, _) = admin(&["hold", "other.example.com", "--beanstalkd", &url]);
    assert!(ok, "{out}");
    let (ok, out, _) = admin(&["hold", "--beanstalkd", &url, "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["held"], serde_json::json!(["other.example.com", HOST]));

    // The list is exactly one buried job, readable by anyone with peek-buried.
    let mut client = beanstalk::Client::connect(url.clone()).await.unwrap();
    let stats = client.stats_tube(TUBE_HOLDS).await.unwrap();
    assert_eq!(
        (stats.current_jobs_buried(), stats.current_jobs_ready()),
        (Some(1), Some(0))
    );
    client.use_tube(TUBE_HOLDS).await.unwrap();
    let list = HoldList::decode(&client.peek_buried().await.unwrap().body).unwrap();
    assert!(list.is_held(HOST));

    let (status, body) = po.send(email(&["u@example.org"], "while held")).await;
    assert_eq!(status, 200, "{body}");
    let sent_at = Instant::now();
    assert!(jobs_in(&url, TUBE_OUTBOUND).await.is_empty());
    assert_eq!(jobs_in(&url, TUBE_HELD).await.len(), 1);

    // release with its default settle time, and a message sent meanwhile under the post
    // office's cached list (fresh for 5s) also ends up in the outbound tube.
    let release = std::thread::spawn({
        let url = url.clone();
        move || admin(&["release", HOST, "--beanstalkd", &url])
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = po.send(email(&["u@example.org"], "during release")).await;
    assert_eq!(status, 200);
    assert!(
        sent_at.elapsed() < hedwig_queue::hold::CACHE_FOR,
        "test too slow to mean anything"
    );
    let (ok, out, err) = tokio::task::spawn_blocking(move || release.join().unwrap())
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("2 held jobs moved"), "{out}");

    let (status, _) = po.send(email(&["u@example.org"], "after release")).await;
    assert_eq!(status, 200);
    assert!(jobs_in(&url, TUBE_HELD).await.is_empty());
    let mut bodies: Vec<Vec<u8>> = jobs_in(&url, TUBE_OUTBOUND)
        .await
        .into_iter()
        .map(|j| j.message)
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            b"after release".to_vec(),
            b"during release".to_vec(),
            b"while held".to_vec()
        ]
    );

    let (ok, out, _) = admin(&["hold", "--beanstalkd", &url]);
    assert!(ok);
    assert_eq!(out.trim(), "held: other.example.com");
    let (ok, _, err) = admin(&["hold", "not a host!", "--beanstalkd", &url]);
    assert!(!ok);
    assert!(err.contains("not a host"), "{err}");
}
