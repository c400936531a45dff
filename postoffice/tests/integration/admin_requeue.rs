//! `postoffice requeue`: dry run changes nothing; a real run moves the selected recipients
//! to the outbound tube with the failure cleared and queue id and history kept, and leaves
//! the other recipients in the failed tube.

use crate::common::{admin, failed_record, jobs_in, put};
use hedwig_queue::tubes::{TUBE_FAILED, TUBE_OUTBOUND};

#[tokio::test]
async fn requeue_by_code_and_domain() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    let q1 = failed_record(
        "Q1",
        "web1.example.com",
        &["a@gmail.com", "b@example.org"],
        550,
        "5.7.1",
        now - 60,
    );
    let q2 = failed_record(
        "Q2",
        "web2.example.com",
        &["c@gmail.com"],
        451,
        "4.4.1",
        now - 120,
    );
    let q3 = failed_record(
        "Q3",
        "web1.example.com",
        &["d@gmail.com"],
        550,
        "5.1.1",
        now - 30,
    );
    for job in [&q1, &q2, &q3] {
        put(&url, TUBE_FAILED, job).await;
    }
    let filter = [
        "--code",
        "4.x.x",
        "--code",
        "5.7.1",
        "--domain",
        "gmail.com",
        "--since",
        "1d",
    ];

    let mut args = vec!["requeue", "--beanstalkd", &url, "--dry-run"];
    args.extend(filter);
    let (ok, out, err) = admin(&args);
    assert!(ok, "{err}");
    assert!(out.contains("2 recipients would be requeued"), "{out}");
    assert!(jobs_in(&url, TUBE_OUTBOUND).await.is_empty());
    assert_eq!(
        jobs_in(&url, TUBE_FAILED).await,
        [q1.clone(), q2.clone(), q3.clone()]
    );

    let mut args = vec!["requeue", "--beanstalkd", &url, "--json"];
    args.extend(filter);
    let (ok, out, err) = admin(&args);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), 2, "{out}");

    let outbound = jobs_in(&url, TUBE_OUTBOUND).await;
    assert_eq!(outbound.len(), 2);
    let mut want1 = q1.clone();
    want1.envelope.rcpt_to = vec!["a@gmail.com".into()];
    want1.envelope.failure = None;
    let mut want2 = q2.clone();
    want2.envelope.failure = None;
    assert_eq!(
        outbound,
        [want1, want2],
        "queue id, history and message kept"
    );

    let mut kept1 = q1.clone();
    kept1.envelope.rcpt_to = vec!["b@example.org".into()];
    assert_eq!(jobs_in(&url, TUBE_FAILED).await, [kept1, q3]);

    // Nothing left to match: a second run moves nothing.
    let mut args = vec!["requeue", "--beanstalkd", &url];
    args.extend(filter);
    let (ok, out, _) = admin(&args);
    assert!(ok);
    assert!(out.contains("0 recipients requeued"), "{out}");
    assert_eq!(jobs_in(&url, TUBE_OUTBOUND).await.len(), 2);
}

#[tokio::test]
async fn requeue_of_a_held_host_goes_to_the_held_tube() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    put(
        &url,
        TUBE_FAILED,
        &failed_record("Q1", "bad.example.com", &["a@gmail.com"], 550, "5.7.1", now),
    )
    .await;
    let (ok, _, err) = admin(&["hold", "bad.example.com", "--beanstalkd", &url]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&["requeue", "--id", "Q1", "--beanstalkd", &url]);
    assert!(ok, "{err}");
    assert!(jobs_in(&url, TUBE_OUTBOUND).await.is_empty());
    let held = jobs_in(&url, hedwig_queue::tubes::TUBE_HELD).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].envelope.queue_id, "Q1");
    assert!(held[0].envelope.failure.is_none());
}

#[tokio::test]
async fn requeue_while_a_worker_runs_delivers_each_once() {
    use std::time::Duration;
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    for i in 0..50 {
        let qid = format!("Q{i:02}");
        put(
            &url,
            TUBE_FAILED,
            &failed_record(
                &qid,
                "web1.example.com",
                &["a@gmail.com"],
                550,
                "5.7.1",
                now,
            ),
        )
        .await;
    }
    // A worker: reserves from the outbound tube and deletes what it "delivered".
    let worker = tokio::spawn({
        let url = url.clone();
        async move {
            let mut c = beanstalk::Client::connect(url).await.unwrap();
            c.watch(TUBE_OUTBOUND).await.unwrap();
            c.ignore("default").await.unwrap();
            let mut delivered = Vec::new();
            while delivered.len() < 50 {
                match c.reserve_with_timeout(Duration::from_secs(10)).await {
                    Ok(job) => {
                        let j = hedwig_queue::job::Job::decode(&job.body).unwrap();
                        assert!(j.envelope.failure.is_none());
                        delivered.push(j.envelope.queue_id);
                        c.delete(job.id).await.unwrap();
                    }
                    Err(e) => panic!("worker: {e}"),
                }
            }
            delivered
        }
    });
    let (ok, out, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || admin(&["requeue", "--beanstalkd", &url, "--code", "5.7.1"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("50 recipients requeued"), "{out}");
    let mut delivered = tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .unwrap()
        .unwrap();
    delivered.sort();
    let want: Vec<String> = (0..50).map(|i| format!("Q{i:02}")).collect();
    assert_eq!(
        delivered, want,
        "each requeued message delivered exactly once"
    );
    assert!(jobs_in(&url, TUBE_FAILED).await.is_empty());
}
