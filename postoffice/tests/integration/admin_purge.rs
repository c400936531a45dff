//! `postoffice purge`: refuses without `--yes` when stdin is not a terminal; with `--yes`
//! deletes exactly the selected recipients.

use crate::common::{admin, failed_record, jobs_in, put};
use hedwig_queue::tubes::TUBE_FAILED;

#[tokio::test]
async fn purge_needs_yes_and_deletes_only_what_matches() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    let q1 = failed_record(
        "Q1",
        "web1.example.com",
        &["a@gmail.com", "b@example.org"],
        550,
        "5.1.1",
        now,
    );
    let q2 = failed_record(
        "Q2",
        "web2.example.com",
        &["c@gmail.com"],
        550,
        "5.1.1",
        now,
    );
    put(&url, TUBE_FAILED, &q1).await;
    put(&url, TUBE_FAILED, &q2).await;

    let (ok, _, err) = admin(&["purge", "--beanstalkd", &url, "--host", "web1.example.com"]);
    assert!(!ok);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(jobs_in(&url, TUBE_FAILED).await, [q1.clone(), q2.clone()]);

    let (ok, out, err) = admin(&[
        "purge",
        "--beanstalkd",
        &url,
        "--host",
        "web1.example.com",
        "--domain",
        "gmail.com",
        "--yes",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("1 failed recipients deleted"), "{out}");
    let mut kept = q1.clone();
    kept.envelope.rcpt_to = vec!["b@example.org".into()];
    assert_eq!(jobs_in(&url, TUBE_FAILED).await, [kept, q2.clone()]);

    let (ok, out, err) = admin(&["purge", "--beanstalkd", &url, "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 failed recipients deleted"), "{out}");
    assert!(jobs_in(&url, TUBE_FAILED).await.is_empty());
}

#[tokio::test]
async fn purge_asks_and_a_no_keeps_everything() {
    let b = hedwig_testkit::Beanstalkd::start();
    let now = hedwig_core::unix_now();
    let q1 = failed_record(
        "Q1",
        "web1.example.com",
        &["a@gmail.com"],
        550,
        "5.1.1",
        now,
    );
    put(&b.url(), TUBE_FAILED, &q1).await;
    let target = postoffice::admin::Target {
        servers: vec![b.url()],
        tubes: hedwig_queue::Tubes::default(),
        priority: 1024,
        ttr: std::time::Duration::from_secs(60),
        lanes: hedwig_queue::lane::default_lanes(),
        default_lane: hedwig_queue::lane::default_lane(),
        events: true,
        operator: None,
    };
    let args = postoffice::admin::purge::PurgeArgs {
        filter: Default::default(),
        yes: false,
        json: false,
        limit: 100,
    };
    let mut asked = 0;
    let mut say_no = |rows: &[postoffice::admin::failed::Row]| {
        asked = rows.len();
        false
    };
    let report = postoffice::admin::purge::run(&target, &args, Some(&mut say_no))
        .await
        .unwrap();
    assert_eq!(asked, 1);
    assert!(!report.confirmed);
    assert_eq!(jobs_in(&b.url(), TUBE_FAILED).await, [q1]);
    let mut say_yes = |_: &[postoffice::admin::failed::Row]| true;
    let report = postoffice::admin::purge::run(&target, &args, Some(&mut say_yes))
        .await
        .unwrap();
    assert!(report.confirmed);
    assert!(jobs_in(&b.url(), TUBE_FAILED).await.is_empty());
}

#[tokio::test]
async fn purge_older_than_keeps_recent_records() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    let old = failed_record(
        "OLD",
        "web1.example.com",
        &["a@example.org"],
        550,
        "5.1.1",
        now - 40 * 86400,
    );
    let recent = failed_record(
        "NEW",
        "web1.example.com",
        &["b@example.org"],
        550,
        "5.1.1",
        now - 3600,
    );
    put(&url, TUBE_FAILED, &old).await;
    put(&url, TUBE_FAILED, &recent).await;
    let (ok, out, err) = admin(&[
        "purge",
        "--beanstalkd",
        &url,
        "--older-than",
        "30d",
        "--yes",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("1 failed recipients deleted"), "{out}");
    assert_eq!(jobs_in(&url, TUBE_FAILED).await, [recent]);
}
