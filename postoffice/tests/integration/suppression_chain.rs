//! The suppression list through the chain: the post office (ledger writer on SQLite, the API
//! on its own port, intake suppressing) -> a real beanstalkd -> a real worker (in-process) ->
//! DNS (testkit) -> a scripted SMTP receiver that refuses `unknown@` with 550 5.1.1 and
//! `blocked@` with 550 5.7.1.
//!
//! A 550 5.1.1 and an NXDOMAIN suppress; the next message to those addresses opens no RCPT
//! for them (the receiver's command log says so) while the 5.7.1 address is tried again; a
//! post whose every recipient is suppressed succeeds and queues nothing, its timeline shows
//! each recipient `suppressed`; the real `postoffice suppress remove` lets mail through
//! again. The admin API adds, lists and removes entries and names bad parameters.
//!
//! This file's addresses: 127.0.140.100-104.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{HOST, SECRET};

const TOKEN: &str = "suppression-test-token-0123456789";
const UNKNOWN: &str = "unknown@rcpt.test";
const BLOCKED: &str = "blocked@rcpt.test";
const OK: &str = "ok@rcpt.test";
const GONE: &str = "x@gone.test";
const MANUAL: &str = "manual@rcpt.test";
const WAIT: Duration = Duration::from_secs(30);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 140, last)
}

/// The MX's script. Idle connections close after 300 ms, so that a new script (taken at
/// connect) holds for the next message.
fn behaviour() -> Behaviour {
    Behaviour::new()
        .hostname("mx.rcpt.test")
        .idle_timeout(Duration::from_millis(300))
        .rcpt(UNKNOWN, "550 5.1.1 <unknown@rcpt.test>: no such user here")
        .rcpt(BLOCKED, "550 5.7.1 <blocked@rcpt.test>: blocked by policy")
}

struct Chain {
    http: reqwest::Client,
    intake: SocketAddr,
    api: SocketAddr,
    data: tempfile::TempDir,
    beanstalkd: Beanstalkd,
    mx: SmtpReceiver,
    stop: CancellationToken,
    _dns: DnsServer,
}

impl Chain {
    async fn start() -> Chain {
        let beanstalkd = Beanstalkd::start_on(ip(100));
        let zone = Zone::new()
            .mx("rcpt.test", 10, "mx.rcpt.test")
            .a("mx.rcpt.test", &ip(102).to_string());
        let dns_addr = SocketAddr::from((ip(101), hedwig_testkit::net::free_port(ip(101))));
        let dns = DnsServer::start_on(dns_addr, zone)
            .await
            .expect("DNS server");
        let mx = SmtpReceiver::start(SocketAddr::from((ip(102), 25)), behaviour())
            .await
            .expect("SMTP receiver on port 25 (run as root)");
        let data = tempfile::tempdir().unwrap();
        let token_file = data.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let api = SocketAddr::from((ip(103), hedwig_testkit::net::free_port(ip(103))));
        let mut config = crate::common::config(&beanstalkd);
        config.data_dir = data.path().to_path_buf();
        config.ledger.writer = true;
        config.ledger.api_listen = Some(api);
        config.ledger.api_token_file = Some(token_file);
        config.suppression.refresh = Duration::from_millis(200);
        let listener = tokio::net::TcpListener::bind((ip(103), 0)).await.unwrap();
        let intake = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(postoffice::serve(config, listener, stop.clone()));

        let t = Duration::from_secs(5);
        let worker = worker::Config {
            beanstalkd: vec![beanstalkd.url()],
            concurrency: 2,
            hostname: "relay.hedwig.test".into(),
            nameservers: vec![dns.addr().to_string()],
            timeouts: worker::config::Timeouts {
                connect: t,
                greeting: t,
                helo: t,
                mail: t,
                rcpt: t,
                data_init: t,
                data_block: t,
                data_done: t,
            },
            retry: worker::config::Retry {
                first: Duration::from_secs(1),
                max_delay: Duration::from_secs(2),
                max_lifetime: Duration::from_secs(3600),
            },
            http_listen: String::new(),
            job_ttr: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            ..worker::Config::default()
        };
        tokio::spawn(worker::run(worker, stop.clone()));

        let chain = Chain {
            http: reqwest::Client::new(),
            intake,
            api,
            data,
            beanstalkd,
            mx,
            stop,
            _dns: dns,
        };
        let up = eventually(|| async {
            chain
                .http
                .get(format!("http://{intake}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "the post office answers /health");
        chain
    }

    /// Posts a message from HOST to `to`; the status and the queue id.
    async fn post(&self, to: &[&str]) -> (u16, String) {
        let key = hedwig_core::key::derive_key(SECRET, HOST);
        let email = json!({
            "mailfrom": "app@example.com",
            "rcpttos": to,
            "data": "From: app@example.com\r\nSubject: suppression\r\n\r\nhello\r\n",
        })
        .to_string();
        let answer = self
            .http
            .post(format!("http://{}/", self.intake))
            .form(&[
                ("fqdn", HOST),
                ("key", key.as_str()),
                ("email", email.as_str()),
            ])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the post office answers");
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        (status, body["id"].as_str().unwrap_or_default().to_owned())
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.api))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("the API answers");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::GET, path, None).await
    }

    /// The suppressions of `recipient`, as (scope, reason).
    async fn suppressions(&self, recipient: &str) -> Vec<(String, String)> {
        let (status, body) = self
            .get(&format!("/api/v1/suppressions?recipient={recipient}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["suppressions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["scope"].as_str().unwrap_or_default().to_owned(),
                    s["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The message's timeline once it is final (every recipient has an outcome).
    async fn final_timeline(&self, queue_id: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..(WAIT.as_millis() / 100) {
            let (status, body) = self.get(&format!("/api/v1/messages/{queue_id}")).await;
            if status == 200 && !body["message"]["final_at"].is_null() {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{queue_id} not final within {WAIT:?}: {last}");
    }

    /// Jobs ever put into the outbound tube.
    async fn jobs_put(&self) -> u64 {
        let mut c = beanstalk::Client::connect(self.beanstalkd.url())
            .await
            .unwrap();
        match c.stats_tube(hedwig_queue::tubes::TUBE_OUTBOUND).await {
            Ok(s) => s.get_u64("total-jobs").unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// The RCPT commands the receiver got after the first `from` commands.
    fn rcpts_since(&self, from: usize) -> Vec<String> {
        self.mx
            .commands()
            .into_iter()
            .skip(from)
            .filter(|c| c.to_ascii_uppercase().starts_with("RCPT TO:"))
            .collect()
    }

    /// The real `postoffice` binary on this chain's store.
    fn postoffice(&self, args: &[&str]) -> (bool, String, String) {
        run_binary(self.data.path(), args)
    }
}

fn run_binary(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .args(args)
        .env_remove("HEDWIG_CONFIG")
        .env_remove("HEDWIG_BEANSTALKD")
        .env("HEDWIG_DATA_DIR", data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run postoffice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` every 100 ms for at most [`WAIT`].
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..(WAIT.as_millis() / 100) {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn recipient_status(timeline: &Value, recipient: &str) -> String {
    timeline["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["recipient"] == recipient))
        .and_then(|r| r["status"].as_str())
        .unwrap_or("none")
        .to_owned()
}

/// Intake reloads every 200 ms: a second is five reloads.
async fn let_intake_reload() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_failures_suppress_the_next_message_and_removal_lets_mail_through() {
    let chain = Chain::start().await;

    // 1. Every case once: 550 5.1.1, 550 5.7.1, 250, NXDOMAIN.
    let (status, first) = chain.post(&[UNKNOWN, BLOCKED, OK, GONE]).await;
    assert_eq!(status, 200);
    let timeline = chain.final_timeline(&first).await;
    assert_eq!(recipient_status(&timeline, UNKNOWN), "bounced");
    assert_eq!(recipient_status(&timeline, BLOCKED), "bounced");
    assert_eq!(recipient_status(&timeline, OK), "sent");
    assert_eq!(recipient_status(&timeline, GONE), "bounced");
    // The writer stored the suppressions with the message's outcomes (one transaction).
    assert_eq!(
        chain.suppressions(UNKNOWN).await,
        [("example.com".to_owned(), "unknown-user".to_owned())]
    );
    assert_eq!(
        chain.suppressions(GONE).await,
        [("example.com".to_owned(), "no-domain".to_owned())]
    );
    assert!(
        chain.suppressions(BLOCKED).await.is_empty(),
        "5.7.1 never suppresses"
    );
    assert!(chain.suppressions(OK).await.is_empty());

    // The API: an operator's entry for every sender; bad parameters are named.
    let (status, body) = chain
        .api(
            reqwest::Method::POST,
            "/api/v1/suppressions",
            Some(json!({"recipient": MANUAL, "reason": "asked us to stop", "expires": "7d"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["suppression"]["scope"], "*");
    let (status, body) = chain.get("/api/v1/suppressions?source=robot").await;
    assert_eq!((status, body["parameter"].as_str()), (400, Some("source")));
    let (status, body) = chain
        .api(
            reqwest::Method::POST,
            "/api/v1/suppressions",
            Some(json!({"scope": "*"})),
        )
        .await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("recipient"))
    );
    let (status, body) = chain
        .api(reqwest::Method::DELETE, "/api/v1/suppressions", None)
        .await;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("recipient"))
    );
    let (status, _) = chain
        .http
        .get(format!("http://{}/api/v1/suppressions", chain.api))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "no token");

    // 2. The next message: no RCPT for the suppressed addresses, the 5.7.1 one tried again.
    let_intake_reload().await;
    let before = chain.mx.commands().len();
    let received = chain.mx.received().len();
    let (status, second) = chain.post(&[UNKNOWN, BLOCKED, OK, GONE, MANUAL]).await;
    assert_eq!(status, 200);
    let timeline = chain.final_timeline(&second).await;
    assert!(chain.mx.wait_for(received + 1, WAIT).await.is_some());
    let rcpts = chain.rcpts_since(before);
    assert!(rcpts.iter().any(|c| c.contains(OK)), "{rcpts:?}");
    assert!(rcpts.iter().any(|c| c.contains(BLOCKED)), "{rcpts:?}");
    assert!(!rcpts.iter().any(|c| c.contains(UNKNOWN)), "{rcpts:?}");
    assert!(!rcpts.iter().any(|c| c.contains(MANUAL)), "{rcpts:?}");
    for r in [UNKNOWN, GONE, MANUAL] {
        assert_eq!(
            recipient_status(&timeline, r),
            "suppressed",
            "{r}: {timeline}"
        );
    }
    assert_eq!(recipient_status(&timeline, OK), "sent");
    let suppressed_events = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "suppressed")
        .count();
    assert_eq!(suppressed_events, 3, "{timeline}");
    assert_eq!(
        timeline["message"]["recipients"], 5,
        "every recipient on record"
    );

    // 3. Every recipient suppressed: 200 (mailman must not retry), nothing queued.
    let jobs = chain.jobs_put().await;
    let (status, third) = chain.post(&[UNKNOWN, GONE]).await;
    assert_eq!(status, 200);
    assert!(!third.is_empty());
    assert_eq!(chain.jobs_put().await, jobs, "no delivery job");
    let timeline = chain.final_timeline(&third).await;
    assert_eq!(recipient_status(&timeline, UNKNOWN), "suppressed");
    assert_eq!(recipient_status(&timeline, GONE), "suppressed");

    // 4. The real binary: list shows the entry; remove lets mail through again.
    let (ok, out, err) = chain.postoffice(&["suppress", "list", "--source", "auto"]);
    assert!(ok, "{err}");
    assert!(out.contains(UNKNOWN) && out.contains(GONE), "{out}");
    assert!(!out.contains(MANUAL), "filtered by source: {out}");
    let (ok, _, err) = chain.postoffice(&["suppress", "list", "--source", "robot"]);
    assert!(!ok && err.contains("--source"), "{err}");
    let (ok, out, err) = chain.postoffice(&["suppress", "remove", UNKNOWN]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("removed 1 entry"), "{out}");
    assert!(chain.suppressions(UNKNOWN).await.is_empty());
    chain.mx.set_behaviour(
        Behaviour::new()
            .hostname("mx.rcpt.test")
            .idle_timeout(Duration::from_millis(300)),
    );
    let_intake_reload().await;
    let before = chain.mx.commands().len();
    let received = chain.mx.received().len();
    let (status, fourth) = chain.post(&[UNKNOWN]).await;
    assert_eq!(status, 200);
    let Some(got) = chain.mx.wait_for(received + 1, WAIT).await else {
        let (_, t) = chain.get(&format!("/api/v1/messages/{fourth}")).await;
        let (_, s) = chain.get("/api/v1/suppressions?expired=true").await;
        panic!("not delivered: {t}\n{s}\n{:?}", chain.mx.commands());
    };
    assert!(got.last().unwrap().rcpt_to.contains(&UNKNOWN.to_owned()));
    assert!(chain
        .rcpts_since(before)
        .iter()
        .any(|c| c.contains(UNKNOWN)));
    let timeline = chain.final_timeline(&fourth).await;
    assert_eq!(recipient_status(&timeline, UNKNOWN), "sent");

    // add with a scope and an expiry, seen by list --json; bad arguments are named (exit 2).
    let (ok, _, err) = chain.postoffice(&[
        "suppress",
        "add",
        "Later@Rcpt.test",
        "--scope",
        "example.com",
        "--expires",
        "1d",
        "--reason",
        "asked",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = chain.postoffice(&[
        "suppress",
        "list",
        "--recipient",
        "later@rcpt.test",
        "--json",
    ]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    let entry = &listed["suppressions"][0];
    assert_eq!(
        (
            entry["recipient"].as_str(),
            entry["scope"].as_str(),
            entry["source"].as_str()
        ),
        (
            Some("later@rcpt.test"),
            Some("example.com"),
            Some("operator")
        )
    );
    let until = entry["expires_at"].as_u64().unwrap() - entry["created_at"].as_u64().unwrap();
    assert_eq!(until, 86_400_000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .args(["suppress", "add", "a@b.test", "--expires", "soon"])
        .env("HEDWIG_DATA_DIR", chain.data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--expires"));
    let (ok, _, err) = chain.postoffice(&["suppress", "remove"]);
    assert!(!ok && err.contains("give a recipient"), "{err}");
    let (ok, out, _) = chain.postoffice(&[
        "suppress",
        "remove",
        "later@rcpt.test",
        "--scope",
        "other.test",
    ]);
    assert!(!ok && out.contains("removed 0"), "another scope: {out}");
    let (ok, out, _) = chain.postoffice(&[
        "suppress",
        "remove",
        "--recipient",
        "later@rcpt.test",
        "--scope",
        "example.com",
    ]);
    assert!(ok && out.contains("removed 1"), "{out}");

    // The API removes too.
    let (status, body) = chain
        .api(
            reqwest::Method::DELETE,
            &format!("/api/v1/suppressions?recipient={MANUAL}"),
            None,
        )
        .await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(1)), "{body}");
    chain.stop.cancel();
}
