//! `postoffice show` finds a message in the failed tube and in the outbound tube (by peeking,
//! while a "worker" holds another job reserved); `stats` counts per tube and per host.

use std::time::Duration;

use crate::common::{admin, failed_record, put};
use hedwig_queue::tubes::{TUBE_FAILED, TUBE_OUTBOUND};

#[tokio::test]
async fn show_and_stats() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    put(
        &url,
        TUBE_FAILED,
        &failed_record(
            "QF",
            "web1.example.com",
            &["a@gmail.com"],
            550,
            "5.7.1",
            now,
        ),
    )
    .await;
    put(
        &url,
        TUBE_FAILED,
        &failed_record(
            "QG",
            "web2.example.com",
            &["b@gmail.com"],
            550,
            "5.7.1",
            now,
        ),
    )
    .await;
    let mut queued = failed_record(
        "QO",
        "web1.example.com",
        &["c@example.org"],
        450,
        "4.2.0",
        now,
    );
    queued.envelope.failure = None;
    put(&url, TUBE_OUTBOUND, &queued).await;
    let mut busy = queued.clone();
    busy.envelope.queue_id = "QR".into();
    put(&url, TUBE_OUTBOUND, &busy).await;
    // A worker reserves one outbound job and keeps it.
    let mut worker = beanstalk::Client::connect(url.clone()).await.unwrap();
    worker.watch(TUBE_OUTBOUND).await.unwrap();
    let reserved = worker.reserve_with_timeout(Duration::ZERO).await.unwrap();
    let reserved_qid = hedwig_queue::job::Job::decode(&reserved.body)
        .unwrap()
        .envelope
        .queue_id;
    tokio::time::sleep(Duration::from_millis(1100)).await; // ages of at least 1s

    let (ok, out, err) = admin(&["show", "QF", "--beanstalkd", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("queue id:    QF"), "{out}");
    assert!(out.contains("tube hedwig-failed"), "{out}");
    assert!(out.contains("Subject: test QF"), "{out}");
    assert!(!out.contains("body of QF"), "headers only: {out}");
    assert!(
        out.contains("bounced a@gmail.com 550 5.7.1"),
        "history: {out}"
    );

    for qid in ["QO", "QR"] {
        let (ok, out, err) = admin(&["show", qid, "--beanstalkd", &url, "--json"]);
        assert!(ok, "{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let found = &report["found"][0];
        assert_eq!(found["tube"], TUBE_OUTBOUND, "{out}");
        let state = if qid == reserved_qid {
            "reserved"
        } else {
            "ready"
        };
        assert_eq!(found["state"], state, "{out}");
        assert_eq!(found["envelope"]["queue_id"], qid);
    }
    let (ok, out, _) = admin(&["show", "NOPE", "--beanstalkd", &url]);
    assert!(!ok);
    assert!(out.contains("not found"));

    let (ok, out, err) = admin(&["stats", "--beanstalkd", &url, "--json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let server = &report["servers"][0];
    let tube = |name: &str| {
        server["tubes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tube"] == name)
            .cloned()
            .unwrap()
    };
    let outbound = tube(TUBE_OUTBOUND);
    assert_eq!(
        (outbound["ready"].as_u64(), outbound["reserved"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    assert!(outbound["oldest_age"].as_u64().unwrap() >= 1, "{out}");
    let failed = tube(TUBE_FAILED);
    assert_eq!(failed["ready"], 2, "released after counting: {out}");
    assert_eq!(server["failed_by_host"]["web1.example.com"], 1);
    assert_eq!(server["failed_by_host"]["web2.example.com"], 1);
    assert_eq!(
        server["queued_by_host"][TUBE_OUTBOUND]["web1.example.com"], 2,
        "{out}"
    );
    assert_eq!(tube(hedwig_queue::tubes::TUBE_HELD)["ready"], 0);

    let (ok, out, _) = admin(&["stats", "--beanstalkd", &url]);
    assert!(ok);
    assert!(out.contains("hedwig-failed"), "{out}");
    assert!(out.contains("failed records by host"), "{out}");
    drop(worker);
}
