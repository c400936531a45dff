//! Issue 14's `held` and `released` webhook types, in the real `postoffice` binary: an
//! endpoint that asks for `[held, released]` (and nothing else) gets `held` for each
//! recipient of a message posted while its host is held (`postoffice hold`), then `released`
//! for each after `postoffice release`; every request signed (checked by the Python receiver
//! with its own `hmac`), each event id once, and no type it did not ask for.
//!
//! Addresses: 127.0.220.30-39.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hedwig_testkit::Beanstalkd;
use serde_json::Value;

use crate::common::{HOST, SECRET};
use crate::webhooks::Receiver;

const MESSAGE: &str = "From: App <app@example.com>\r\nTo: a@example.org\r\n\
Subject: held\r\nMessage-ID: <held.1@example.com>\r\n\r\nbody\r\n";

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn postoffice(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("HEDWIG_BEANSTALKD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The receiver's answered requests of `event_type` for `queue_id`: (recipient, event id).
fn got(receiver: &Receiver, event_type: &str, queue_id: &str) -> Vec<(String, String)> {
    receiver
        .requests()
        .iter()
        .filter(|r| r["status"] == 200 && r["type"] == event_type)
        .filter(|r| r["payload"]["queue_id"] == queue_id)
        .map(|r| {
            (
                r["payload"]["recipient"].as_str().unwrap_or("").to_owned(),
                r["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn wait_for(receiver: &Receiver, event_type: &str, queue_id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while got(receiver, event_type, queue_id).len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} {event_type} webhooks for {queue_id}; got {:?}",
            receiver.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_released_reach_an_endpoint_that_asked_for_them() {
    let ip = Ipv4Addr::new(127, 0, 220, 30);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let hook_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 220, 31), 9000));
    let receiver = Receiver::start(dir.path(), hook_addr).await;
    let listen = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"{listen}\"\nbeanstalkd: \"{}\"\nsecret: \"{SECRET}\"\ndata_dir: \"{}\"\n\
             ledger:\n  writer: true\n  check_interval: 200ms\n\
             webhooks:\n\
             - name: ops\n  url: \"http://{hook_addr}/hooks\"\n  secret_file: \"{}\"\n  \
               events: [held, released]\n  backoff: 1s\n  max_backoff: 2s\n",
            beanstalkd.url(),
            dir.path().display(),
            dir.path().join("hook.secret").display(),
        ),
    )
    .unwrap();
    let servers = beanstalkd.url();
    let (ok, out) = postoffice(&config, &["hold", HOST, "--beanstalkd", &servers]);
    assert!(ok, "{out}");
    let _serving = Serving(
        Command::new(env!("CARGO_BIN_EXE_postoffice"))
            .arg("--config")
            .arg(&config)
            .env_remove("HEDWIG_BEANSTALKD")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let url = format!("http://{listen}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("{url}health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "the post office came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Posted while its host is held: the job waits in the held tube.
    let key = hedwig_core::key::derive_key(SECRET, HOST);
    let email = serde_json::json!({
        "mailfrom": "app@example.com",
        "rcpttos": ["a@example.org", "b@example.org"],
        "data": MESSAGE,
    })
    .to_string();
    let resp = http
        .post(&url)
        .form(&[
            ("fqdn", HOST),
            ("key", key.as_str()),
            ("email", email.as_str()),
            ("id", "HELD1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let queue_id = body["id"].as_str().unwrap().to_owned();
    let held = crate::common::jobs_in(&servers, hedwig_queue::tubes::TUBE_HELD).await;
    assert_eq!(held.len(), 1, "the job is in the held tube");

    wait_for(&receiver, "held", &queue_id, 2).await;
    let (ok, out) = postoffice(
        &config,
        &["release", HOST, "--beanstalkd", &servers, "--settle", "0s"],
    );
    assert!(ok, "{out}");
    wait_for(&receiver, "released", &queue_id, 2).await;

    let rcpts = |list: Vec<(String, String)>| -> Vec<String> {
        let mut r: Vec<String> = list.into_iter().map(|(r, _)| r).collect();
        r.sort();
        r
    };
    assert_eq!(
        rcpts(got(&receiver, "held", &queue_id)),
        ["a@example.org", "b@example.org"]
    );
    assert_eq!(
        rcpts(got(&receiver, "released", &queue_id)),
        ["a@example.org", "b@example.org"]
    );
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r["sig_ok"] == true), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r["type"] == "held" || r["type"] == "released"),
        "only the types asked for: {requests:?}"
    );
    let ids: HashSet<&str> = requests.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), requests.len(), "each event once: {requests:?}");
}
