//! The admin commands use the configured tube names: with `tube_prefix: acme` (or the old
//! key `tube: acme`, which warns) `failed` reads `acme-failed`, `hold` writes the list in
//! `acme-holds`, `requeue` puts a held host's record into `acme-held`, and `release` moves it
//! to `acme`. Nothing under the default names is touched.

use crate::common::{failed_record, jobs_in, put};

/// Runs the real binary with `HEDWIG_<key>=acme`.
fn admin(key: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .args(args)
        .env_remove("HEDWIG_CONFIG")
        .env_remove("HEDWIG_BEANSTALKD")
        .env_remove("HEDWIG_TUBE")
        .env_remove("HEDWIG_TUBE_PREFIX")
        .env(key, "acme")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn admin_commands_follow_the_tube_prefix() {
    let b = hedwig_testkit::Beanstalkd::start();
    let url = b.url();
    let now = hedwig_core::unix_now();
    let mine = failed_record(
        "Q1",
        "web1.example.com",
        &["a@gmail.com"],
        550,
        "5.7.1",
        now,
    );
    let other = failed_record(
        "Q2",
        "web1.example.com",
        &["b@gmail.com"],
        550,
        "5.7.1",
        now,
    );
    put(&url, "acme-failed", &mine).await;
    put(&url, "hedwig-failed", &other).await;

    let (ok, out, err) = admin(
        "HEDWIG_TUBE_PREFIX",
        &["failed", "--beanstalkd", &url, "--json"],
    );
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["queue_id"], "Q1", "{out}");
    assert!(!err.contains("warning"), "{err}");

    // The old key: same names, and a warning naming the new one.
    let (ok, out, err) = admin(
        "HEDWIG_TUBE",
        &["hold", "--beanstalkd", &url, "web1.example.com"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("tube acme-held"), "{out}");
    assert!(err.contains("renamed `tube_prefix`"), "{err}");
    let mut client = beanstalk::Client::connect(url.clone()).await.unwrap();
    let holds = client.stats_tube("acme-holds").await.unwrap();
    assert_eq!(holds.current_jobs_buried(), Some(1));
    assert!(matches!(
        client.stats_tube("hedwig-holds").await,
        Err(beanstalk::Error::NotFound)
    ));

    let (ok, _, err) = admin(
        "HEDWIG_TUBE_PREFIX",
        &["requeue", "--beanstalkd", &url, "--code", "5.7.1"],
    );
    assert!(ok, "{err}");
    assert!(jobs_in(&url, "acme-failed").await.is_empty());
    assert_eq!(jobs_in(&url, "acme-held").await.len(), 1, "web1 is held");
    assert_eq!(jobs_in(&url, "hedwig-failed").await, [other]);

    let (ok, out, err) = admin(
        "HEDWIG_TUBE_PREFIX",
        &[
            "release",
            "--beanstalkd",
            &url,
            "--settle",
            "0s",
            "web1.example.com",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("moved back to tube acme"), "{out}");
    assert!(jobs_in(&url, "acme-held").await.is_empty());
    let queued = jobs_in(&url, "acme").await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].envelope.queue_id, "Q1");
    assert!(jobs_in(&url, "hedwig").await.is_empty());

    // A prefix that makes no valid tube name is refused, naming the key.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .args(["failed", "--beanstalkd", &url])
        .env_remove("HEDWIG_CONFIG")
        .env("HEDWIG_TUBE_PREFIX", "a b")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tube_prefix: "), "{err}");
}
