//! Admin commands act on every configured server (`HEDWIG_BEANSTALKD=a,b`, as the server
//! reads it).

use crate::common;

use crate::common::{admin_env, failed_record, jobs_in, put};
use hedwig_queue::hold::HoldList;
use hedwig_queue::tubes::TUBE_HOLDS;
use hedwig_queue::tubes::{TUBE_FAILED, TUBE_OUTBOUND};

#[tokio::test]
async fn failed_requeue_and_hold_cover_both_servers() {
    let a = hedwig_testkit::Beanstalkd::start();
    let b = hedwig_testkit::Beanstalkd::start();
    let servers = format!("{},{}", a.url(), b.url());
    let now = hedwig_core::unix_now();
    put(
        &a.url(),
        TUBE_FAILED,
        &failed_record(
            "QA",
            "web1.example.com",
            &["a@gmail.com"],
            550,
            "5.7.1",
            now,
        ),
    )
    .await;
    put(
        &b.url(),
        TUBE_FAILED,
        &failed_record(
            "QB",
            "web2.example.com",
            &["b@gmail.com"],
            550,
            "5.7.1",
            now,
        ),
    )
    .await;

    let (ok, out, err) = admin_env(&["failed", "--json"], Some(&servers));
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut found: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["queue_id"].as_str().unwrap().into(),
                r["server"].as_str().unwrap().into(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, [("QA".into(), a.url()), ("QB".into(), b.url())]);

    let (ok, _, err) = admin_env(&["requeue"], Some(&servers));
    assert!(ok, "{err}");
    assert_eq!(
        jobs_in(&a.url(), TUBE_OUTBOUND).await[0].envelope.queue_id,
        "QA"
    );
    assert_eq!(
        jobs_in(&b.url(), TUBE_OUTBOUND).await[0].envelope.queue_id,
        "QB"
    );
    assert!(jobs_in(&a.url(), TUBE_FAILED).await.is_empty());
    assert!(jobs_in(&b.url(), TUBE_FAILED).await.is_empty());

    let (ok, _, err) = admin_env(&["hold", "web9.example.com"], Some(&servers));
    assert!(ok, "{err}");
    for url in [a.url(), b.url()] {
        let mut client = beanstalk::Client::connect(url).await.unwrap();
        client.use_tube(TUBE_HOLDS).await.unwrap();
        let list = HoldList::decode(&client.peek_buried().await.unwrap().body).unwrap();
        assert!(list.is_held("web9.example.com"));
    }
    // The override flag wins over the environment.
    let (ok, out, _) = admin_env(
        &["hold", "--beanstalkd", &a.url(), "--json"],
        Some("127.0.0.1:1"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("web9.example.com"));
}

#[test]
fn check_config_names_each_unreachable_server() {
    let a = hedwig_testkit::Beanstalkd::start();
    let mut down = hedwig_testkit::Beanstalkd::start();
    down.stop();
    let run = |servers: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
            .arg("check-config")
            .env_remove("HEDWIG_CONFIG")
            // check-config opens the ledger store when the writer is on: not here.
            .env("HEDWIG_LEDGER__WRITER", "false")
            .env("HEDWIG_BEANSTALKD", servers)
            .env("HEDWIG_SECRET", common::SECRET)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&a.url());
    assert!(ok, "{out}");
    let (ok, out) = run(&format!("{},{}", a.url(), down.url()));
    assert!(!ok);
    assert!(out.contains(&down.url()), "{out}");
    assert!(
        !out.contains(&format!("{} is unreachable", a.url())),
        "{out}"
    );
}

/// `beanstalkd` in a config file: the old form (one string with commas) and a YAML list are
/// the same two servers, for `check-config` and for an admin command.
#[tokio::test]
async fn beanstalkd_in_a_file_as_a_comma_string_or_a_list() {
    let a = hedwig_testkit::Beanstalkd::start();
    let b = hedwig_testkit::Beanstalkd::start();
    let dir = tempfile::tempdir().unwrap();
    let forms = [
        format!("beanstalkd: \"{}, {}\"\n", a.url(), b.url()),
        format!("beanstalkd:\n  - \"{}\"\n  - \"{}\"\n", a.url(), b.url()),
    ];
    for (i, form) in forms.iter().enumerate() {
        let path = dir.path().join(format!("postoffice-{i}.yaml"));
        std::fs::write(&path, format!("{form}secret: {}\n", common::SECRET)).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
                .arg("--config")
                .arg(&path)
                .args(args)
                .env_remove("HEDWIG_CONFIG")
                .env_remove("HEDWIG_BEANSTALKD")
                .env_remove("HEDWIG_SECRET")
                .env("HEDWIG_LEDGER__WRITER", "false")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, out, err) = run(&["check-config"]);
        assert!(ok, "{form}: {out}{err}");
        assert!(
            out.contains(&format!("beanstalkd at {},{} is ready", a.url(), b.url())),
            "{form}: {out}"
        );
        let host = format!("web{i}.example.com");
        let (ok, out, err) = run(&["hold", &host]);
        assert!(ok, "{form}: {out}{err}");
        for url in [a.url(), b.url()] {
            let mut client = beanstalk::Client::connect(url).await.unwrap();
            client.use_tube(TUBE_HOLDS).await.unwrap();
            let list = HoldList::decode(&client.peek_buried().await.unwrap().body).unwrap();
            assert!(list.is_held(&host), "{form}: {host} not held");
        }
    }
}
