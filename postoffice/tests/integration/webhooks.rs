//! Webhooks in the real `postoffice` binary: SIGKILLed while its writer fills the outbox and
//! its dispatcher sends, then restarted, every event reaches the receiver (a Python process
//! that checks each signature with its own `hmac`), and the outbox holds exactly one row per
//! event (filled in the writer's transaction); `postoffice webhooks` lists the counts and
//! the deliveries and retries; `check-config` names every bad `webhooks:` key.
//!
//! Addresses: 127.0.150.60-69.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hedwig_queue::event::{new_event_id, Batch, Event, Outcome, Queued, RecipientEvent, What};
use hedwig_testkit::Beanstalkd;
use serde_json::Value;

use crate::common::SECRET;

pub(crate) const HOOK_SECRET: &str = "whsec-postoffice-test-0123456789";

fn queued(queue_id: &str, at: u64) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Queued(Queued {
            host: "web1.example.com".into(),
            sender: "app@example.com".into(),
            recipients: vec!["bob@example.org".into()],
            size: 321,
            message_kind: "message".into(),
            edge_id: None,
            edge_client: None,
            post_client: None,
            message_id: Some(format!("{queue_id}@example.com")),
            subject: None,
            bounce_of: None,
            expires_at: None,
            held: false,
            app: None,
            lane: None,
            fixups: Vec::new(),
        }),
    }
}

fn sent(queue_id: &str, at: u64) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Recipient(RecipientEvent {
            recipient: "bob@example.org".into(),
            outcome: Outcome::Sent,
            mx: Some("mx.example.org".into()),
            ip: Some("127.0.150.99".into()),
            tls: Some(false),
            code: Some(250),
            dsn: Some("2.0.0".into()),
            reply: "250 2.0.0 ok".into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    }
}

async fn put_events(beanstalkd: &str, events: Vec<Event>) {
    let mut c = beanstalk::Client::connect(beanstalkd.to_owned())
        .await
        .unwrap();
    c.use_tube("hedwig-events").await.unwrap();
    c.put(
        &Batch::new(events).encode(),
        1024,
        Duration::ZERO,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
}

/// The Python receiver (`e2e/webhooks/receiver.py`); killed on drop. Also used by
/// `webhooks_hold.rs`.
pub(crate) struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    pub(crate) async fn start(dir: &Path, addr: std::net::SocketAddr) -> Receiver {
        let secret = dir.join("hook.secret");
        std::fs::write(&secret, HOOK_SECRET).unwrap();
        let log = dir.join("hooks.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/webhooks/receiver.py");
        let receiver = Receiver {
            child: Command::new("python3")
                .arg(script)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--secret-file")
                .arg(&secret)
                .arg("--log")
                .arg(&log)
                .stdout(Stdio::null())
                .spawn()
                .expect("python3"),
            log,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return receiver;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("receiver on {addr}");
    }

    pub(crate) fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A post office process, SIGKILLed when dropped (also when the test fails).
struct Killed(Child);

impl Killed {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

fn postoffice(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_mid_stream_every_event_is_sent_and_the_cli_shows_it() {
    let ip = Ipv4Addr::new(127, 0, 150, 60);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let hook_addr = std::net::SocketAddr::from((Ipv4Addr::new(127, 0, 150, 61), 9000));
    let receiver = Receiver::start(dir.path(), hook_addr).await;
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"{ip}:{}\"\nbeanstalkd: \"{}\"\nsecret: \"{SECRET}\"\ndata_dir: \"{}\"\n\
             ledger:\n  writer: true\n\
             webhooks:\n\
             - name: app\n  url: \"http://{hook_addr}/hooks\"\n  secret_file: \"{}\"\n  \
               events: [queued, delivered]\n  backoff: 1s\n  max_backoff: 2s\n  concurrency: 8\n\
             - name: unused\n  url: \"http://127.0.150.62:9/\"\n  secret_file: \"{}\"\n  \
               events: [bounced]\n",
            hedwig_testkit::net::free_port(ip),
            beanstalkd.url(),
            dir.path().display(),
            dir.path().join("hook.secret").display(),
            dir.path().join("hook.secret").display(),
        ),
    )
    .unwrap();
    // 1,000 messages, a `queued` and a `sent` event each, 10 messages per job.
    let t = hedwig_queue::event::now_millis();
    let mut ids = HashSet::new();
    for job in 0..100 {
        let mut events = Vec::new();
        for m in 0..10 {
            let id = format!("W{job}-{m}");
            events.push(queued(&id, t + job));
            events.push(sent(&id, t + job + 1));
        }
        ids.extend(events.iter().map(|e| e.id.clone()));
        put_events(&beanstalkd.url(), events).await;
    }
    let total = ids.len();
    let spawn = || {
        Killed(
            Command::new(env!("CARGO_BIN_EXE_postoffice"))
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut child = spawn();
    // Kill it once the receiver has some events (writer and dispatcher both mid-stream).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while receiver.requests().len() < 50 {
        assert!(Instant::now() < deadline, "nothing sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill(); // SIGKILL, mid-stream
    let at_kill = receiver.requests().len();
    let mut child = spawn();
    let got = |r: &Receiver| -> HashSet<String> {
        r.requests()
            .iter()
            .filter(|r| r["status"] == 200)
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while got(&receiver).len() < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} (killed at {at_kill})",
            got(&receiver).len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "webhooks: {total} events to one endpoint in {elapsed:?} with a SIGKILL at {at_kill} \
         ({:.0} events/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(got(&receiver), ids, "every event, nothing else");
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r["sig_ok"] == true));
    // Duplicates only from sends the kill cut short (at least once, never lost).
    assert!(
        requests.len() - total <= at_kill + 64,
        "{} requests",
        requests.len()
    );

    // The CLI, on the same store, while the post office runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = postoffice(&config, &["webhooks", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["endpoints"][0]["done"] == total as u64 {
            assert_eq!(v["endpoints"][0]["pending"], 0);
            assert_eq!(v["endpoints"].as_array().unwrap().len(), 1, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill();
    let out = postoffice(&config, &["webhooks"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.lines().any(|l| l.starts_with("app ")
            && l.contains(&format!(" {total} "))
            && l.contains(&format!("http://{hook_addr}/hooks"))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("unused ") && l.contains(" 0 ")),
        "{text}"
    );
    let out = postoffice(
        &config,
        &["webhooks", "deliveries", "--limit", "3", "--status", "done"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("HTTP 200") && l.contains(" done ")),
        "{text}"
    );
    let out = postoffice(&config, &["webhooks", "retry", "--status", "done"]);
    assert!(!out.status.success(), "done rows are not retried");
    let out = postoffice(&config, &["webhooks", "deliveries", "--status", "sent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown status"));
    let out = postoffice(&config, &["webhooks", "retry"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 deliveries due now"
    );
}

/// A webhook endpoint pointed at the post office itself (its intake port, its admin API)
/// cannot make a loop: an event POSTed to intake is not a post (400) and to the admin API has
/// no token (401), so no mail and no new event comes of it; the deliveries are retried with
/// backoff only, and stay visible as failing with the answer's status. Threat model §7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_pointed_at_the_post_office_itself_makes_no_loop() {
    let ip = Ipv4Addr::new(127, 0, 150, 63);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.secret"), HOOK_SECRET).unwrap();
    std::fs::write(dir.path().join("api.token"), "an admin token for this test").unwrap();
    let intake = std::net::SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let api = std::net::SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"{intake}\"\nbeanstalkd: \"{}\"\nsecret: \"{SECRET}\"\ndata_dir: \"{}\"\n\
             ledger:\n  writer: true\n  api_listen: \"{api}\"\n  api_token_file: \"{}\"\n\
             webhooks:\n\
             - name: intake\n  url: \"http://{intake}/\"\n  secret_file: \"{}\"\n  \
               events: [queued, delivered]\n  backoff: 1s\n  max_backoff: 1s\n\
             - name: admin\n  url: \"http://{api}/api/v1/suppressions\"\n  secret_file: \"{}\"\n  \
               events: [queued, delivered]\n  backoff: 1s\n  max_backoff: 1s\n",
            beanstalkd.url(),
            dir.path().display(),
            dir.path().join("api.token").display(),
            dir.path().join("hook.secret").display(),
            dir.path().join("hook.secret").display(),
        ),
    )
    .unwrap();
    let t = hedwig_queue::event::now_millis();
    let events: Vec<Event> = (0..5)
        .flat_map(|i| {
            let id = format!("LOOP{i}");
            [queued(&id, t + i), sent(&id, t + i + 1)]
        })
        .collect();
    let total = events.len() as u64;
    put_events(&beanstalkd.url(), events).await;
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_postoffice"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deliveries = |endpoint: &str| -> Vec<Value> {
        let out = postoffice(
            &config,
            &[
                "webhooks",
                "deliveries",
                "--endpoint",
                endpoint,
                "--limit",
                "100",
                "--json",
            ],
        );
        // The post office makes its store at start: until then, nothing to list.
        if String::from_utf8_lossy(&out.stderr).contains("no ledger at") {
            return Vec::new();
        }
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["deliveries"].as_array().cloned().unwrap_or_default()
    };
    // Every event tried at least twice against both endpoints.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tried = |e: &str| {
            let d = deliveries(e);
            d.len() as u64 == total && d.iter().all(|d| d["attempts"].as_u64() >= Some(2))
        };
        if tried("intake") && tried("admin") {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", deliveries("intake"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (endpoint, code) in [("intake", 400), ("admin", 401)] {
        let d = deliveries(endpoint);
        assert_eq!(
            d.len() as u64,
            total,
            "no new event came of the sends: {d:?}"
        );
        for row in &d {
            assert_eq!(row["status"], "pending", "{row}");
            assert_eq!(row["last_code"], code, "{row}");
            // 1 s backoff over a few seconds: a handful of tries, not a storm
            assert!(row["attempts"].as_u64() <= Some(20), "{row}");
        }
    }
    // Nothing was queued for delivery, and the events tube holds nothing new.
    let mut c = beanstalk::Client::connect(beanstalkd.url()).await.unwrap();
    for tube in ["hedwig", "hedwig-events"] {
        let ready = match c.stats_tube(tube).await {
            Ok(stats) => stats.current_jobs_ready().unwrap_or(0),
            Err(beanstalk::Error::NotFound) => 0, // never used
            Err(e) => panic!("{tube}: {e}"),
        };
        assert_eq!(ready, 0, "{tube}");
    }
}

#[test]
fn check_config_names_every_bad_webhook_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(dir.path().join("short"), "abc").unwrap();
    std::fs::write(
        &config,
        format!(
            "secret: \"{SECRET}\"\ndata_dir: \"{}\"\nbeanstalkd: \"127.0.150.63:9\"\n\
             webhooks:\n\
             - name: app\n  url: \"ftp://hooks.example.com/\"\n  secret_file: \"{}\"\n  \
               events: [delivered, opened]\n",
            dir.path().display(),
            dir.path().join("short").display()
        ),
    )
    .unwrap();
    let out = postoffice(&config, &["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "webhooks[0].url: \"ftp://hooks.example.com/\": must be http:// or https://",
        "webhooks[0]: the secret must be at least 16 characters",
        "webhooks[0].events: unknown event \"opened\"",
    ] {
        assert!(err.contains(needle), "{needle} in:\n{err}");
    }
}
