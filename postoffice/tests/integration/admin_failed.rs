//! `postoffice failed` against a real beanstalkd: filters, text and JSON output, and the
//! failed tube left as it was.

use crate::common::{admin, failed_record, jobs_in, put};
use hedwig_queue::tubes::TUBE_FAILED;

#[tokio::test]
async fn lists_and_filters_failed_records() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    put(
        &url,
        TUBE_FAILED,
        &failed_record(
            "Q1",
            "web1.example.com",
            &["a@gmail.com", "b@example.org"],
            550,
            "5.7.1",
            now - 60,
        ),
    )
    .await;
    put(
        &url,
        TUBE_FAILED,
        &failed_record(
            "Q2",
            "web2.example.com",
            &["c@gmail.com"],
            450,
            "4.2.0",
            now - 120,
        ),
    )
    .await;
    put(
        &url,
        TUBE_FAILED,
        &failed_record(
            "Q3",
            "web1.example.com",
            &["d@yahoo.com"],
            550,
            "5.1.1",
            now - 3 * 86400,
        ),
    )
    .await;
    // A worker busy on the outbound tube meanwhile is not disturbed.
    put(
        &url,
        hedwig_queue::tubes::TUBE_OUTBOUND,
        &failed_record(
            "Q9",
            "web1.example.com",
            &["x@example.net"],
            0,
            "2.0.0",
            now,
        ),
    )
    .await;

    let (ok, out, err) = admin(&["failed", "--beanstalkd", &url]);
    assert!(ok, "{err}");
    for id in ["Q1", "Q2", "Q3"] {
        assert!(out.contains(id), "{out}");
    }
    assert!(!out.contains("Q9"), "{out}");
    assert!(out.contains("4 failed recipients"), "{out}");
    assert!(out.contains("550 5.7.1 rejected by policy"), "{out}");

    let (ok, out, err) = admin(&[
        "failed",
        "--beanstalkd",
        &url,
        "--code",
        "4.x.x",
        "--code",
        "5.7.1",
        "--domain",
        "gmail.com",
        "--since",
        "1d",
        "--json",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["queue_id"].as_str().unwrap(), r["to"].as_str().unwrap()))
        .collect();
    // oldest failure first
    assert_eq!(got, [("Q2", "c@gmail.com"), ("Q1", "a@gmail.com")]);
    assert_eq!(rows[1]["host"], "web1.example.com");
    assert_eq!(rows[1]["from"], "app@example.com");
    assert_eq!(rows[1]["code"], 550);
    assert_eq!(rows[1]["dsn"], "5.7.1");

    let (ok, out, _) = admin(&[
        "failed",
        "--beanstalkd",
        &url,
        "--host",
        "web1.example.com",
        "--code",
        "550",
        "--json",
    ]);
    assert!(ok);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 3, "{out}");

    // Listing changed nothing: all three records are ready again, untouched.
    let left = jobs_in(&url, TUBE_FAILED).await;
    assert_eq!(left.len(), 3);
    let mut expected = failed_record(
        "Q1",
        "web1.example.com",
        &["a@gmail.com", "b@example.org"],
        550,
        "5.7.1",
        now - 60,
    );
    // `received_at` is the clock's when the record was made: the one put above may be a
    // second older than this copy.
    expected.envelope.received_at = left[0].envelope.received_at;
    assert_eq!(left[0], expected);

    let (ok, _, err) = admin(&["failed", "--beanstalkd", &url, "--code", "55"]);
    assert!(!ok);
    assert!(err.contains("expected an SMTP code"), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_an_error_but_others_are_listed() {
    let b = hedwig_testkit::Beanstalkd::start();
    let mut down = hedwig_testkit::Beanstalkd::start();
    down.stop();
    let now = hedwig_core::unix_now();
    put(
        &b.url(),
        TUBE_FAILED,
        &failed_record(
            "Q1",
            "web1.example.com",
            &["a@gmail.com"],
            550,
            "5.7.1",
            now,
        ),
    )
    .await;
    let servers = format!("{},{}", down.url(), b.url());
    let (ok, out, err) = admin(&["failed", "--beanstalkd", &servers]);
    assert!(!ok);
    assert!(out.contains("Q1"), "{out}");
    assert!(err.contains(&down.url()), "{err}");
}

#[tokio::test]
async fn a_dead_admin_connection_gives_its_jobs_back() {
    let b = hedwig_testkit::Beanstalkd::start();
    let now = hedwig_core::unix_now();
    put(
        &b.url(),
        TUBE_FAILED,
        &failed_record(
            "Q1",
            "web1.example.com",
            &["a@gmail.com"],
            550,
            "5.7.1",
            now,
        ),
    )
    .await;
    let batch = hedwig_queue::scan::Batch::reserve(&b.url(), TUBE_FAILED, 10)
        .await
        .unwrap();
    assert_eq!(batch.entries.len(), 1);
    assert!(
        jobs_in(&b.url(), TUBE_FAILED).await.is_empty(),
        "reserved by the admin"
    );
    drop(batch); // the process died: its connection closes
    let mut back = Vec::new();
    for _ in 0..50 {
        back = jobs_in(&b.url(), TUBE_FAILED).await;
        if !back.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(back.len(), 1);
}
