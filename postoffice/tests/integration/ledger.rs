//! The ledger in the post office: the writer moves events from the events tube into the
//! store, the admin API answers on its own listener (token, 400/401/404/503), `trace` and
//! `stuck` read the same store, the stuck gauge counts, and a store outage leaves intake
//! alone. Events are put by hand here, as the post office and workers put them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hedwig_queue::event::{new_event_id, Batch, Event, Outcome, Queued, RecipientEvent, What};
use hedwig_testkit::{Beanstalkd, Postgres};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::{email, SECRET};

const TOKEN: &str = "ledger-test-token-0123456789";
const DAY: u64 = 86_400_000;

fn now() -> u64 {
    hedwig_queue::event::now_millis()
}

fn queued(queue_id: &str, at: u64, recipients: &[&str]) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Queued(Queued {
            host: "web1.example.com".into(),
            sender: "app@example.com".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            size: 321,
            message_kind: "message".into(),
            edge_id: None,
            edge_client: None,
            post_client: None,
            message_id: Some(format!("{queue_id}@example.com")),
            subject: Some("Hello".into()),
            bounce_of: None,
            expires_at: None,
            held: false,
            app: None,
            lane: None,
            fixups: Vec::new(),
        }),
    }
}

fn attempt(queue_id: &str, at: u64, recipient: &str, outcome: Outcome, code: u16) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Recipient(RecipientEvent {
            recipient: recipient.into(),
            outcome,
            mx: Some("mx.example.org".into()),
            ip: Some("127.0.130.99".into()),
            tls: Some(false),
            code: Some(code),
            dsn: None,
            reply: format!("{code} reply"),
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

struct Running {
    intake: SocketAddr,
    api: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), postoffice::StartError>>,
    http: reqwest::Client,
}

impl Running {
    async fn start(
        ip: Ipv4Addr,
        beanstalkd: &Beanstalkd,
        url: &str,
        dir: &std::path::Path,
    ) -> Running {
        Running::start_with(ip, beanstalkd, url, dir, |_| {}).await
    }

    async fn start_with(
        ip: Ipv4Addr,
        beanstalkd: &Beanstalkd,
        url: &str,
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut postoffice::Config),
    ) -> Running {
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let api = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
        let mut config = postoffice::Config {
            beanstalkd: vec![beanstalkd.url()],
            secret: Some(SECRET.into()),
            startup_wait: Duration::from_secs(2),
            data_dir: dir.to_path_buf(),
            ..postoffice::Config::default()
        };
        config.ledger.url = Some(url.to_owned());
        config.ledger.writer = true;
        config.ledger.check_interval = Duration::from_millis(200);
        config.ledger.api_listen = Some(api);
        config.ledger.api_token_file = Some(token_file);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let intake = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(postoffice::serve(config, listener, shutdown.clone()));
        let running = Running {
            intake,
            api,
            shutdown,
            task,
            http: reqwest::Client::new(),
        };
        assert!(
            running
                .until(Duration::from_secs(10), || async {
                    running.get("/api/v1/stuck", Some(TOKEN)).await.0 != 0
                })
                .await,
            "the API came up"
        );
        running
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("http://{}{path}", self.api));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn until<F, Fut>(&self, limit: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.intake))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn writer_api_trace_and_stuck_on_sqlite() {
    let ip = Ipv4Addr::new(127, 0, 130, 50);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let po = Running::start(ip, &beanstalkd, &url, dir.path()).await;

    let t = now();
    put_events(
        &beanstalkd.url(),
        vec![
            queued("QL1", t - 60_000, &["bob@example.org"]),
            attempt("QL1", t - 50_000, "bob@example.org", Outcome::Deferred, 451),
            attempt("QL1", t - 40_000, "bob@example.org", Outcome::Sent, 250),
            queued("QL2", t - 30_000, &["carol@example.org"]),
            attempt(
                "QL2",
                t - 20_000,
                "carol@example.org",
                Outcome::Bounced,
                550,
            ),
        ],
    )
    .await;
    // Queued six days ago and never finished: stuck.
    put_events(
        &beanstalkd.url(),
        vec![queued("QOLD", t - 6 * DAY, &["dave@example.org"])],
    )
    .await;

    assert!(
        po.until(Duration::from_secs(20), || async {
            po.get("/api/v1/messages/QOLD", Some(TOKEN)).await.0 == 200
        })
        .await,
        "the writer stored the events"
    );
    let (status, body) = po.get("/api/v1/messages/QL1", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["status"], "sent");
    assert_eq!(body["message"]["host"], "web1.example.com");
    assert_eq!(body["recipients"][0]["status"], "sent");
    assert_eq!(body["recipients"][0]["final"], true);
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or(e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, ["queued", "deferred", "sent"]);

    // Search, by recipient and by status; pages.
    let (status, body) = po
        .get("/api/v1/messages?recipient=Carol@example.org", Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"][0]["queue_id"], "QL2");
    assert_eq!(body["messages"][0]["status"], "bounced");
    let (_, body) = po.get("/api/v1/messages?limit=2", Some(TOKEN)).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    let next = body["next"].as_str().expect("a next page").to_owned();
    let (_, body) = po
        .get(
            &format!("/api/v1/messages?limit=2&cursor={next}"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(body["messages"][0]["queue_id"], "QOLD");
    assert_eq!(body["next"], Value::Null);

    // Bad input, tokens, unknown messages.
    let (status, body) = po.get("/api/v1/messages?status=lost", Some(TOKEN)).await;
    assert_eq!((status, body["parameter"].as_str()), (400, Some("status")));
    let (status, body) = po.get("/api/v1/messages?colour=red", Some(TOKEN)).await;
    assert_eq!((status, body["parameter"].as_str()), (400, Some("colour")));
    assert_eq!(po.get("/api/v1/messages", None).await.0, 401);
    assert_eq!(
        po.get("/api/v1/messages", Some("ledger-test-token-012345678"))
            .await
            .0,
        401
    );
    assert_eq!(po.get("/api/v1/messages/NOPE", Some(TOKEN)).await.0, 404);
    // The API is not on the intake port.
    let intake = po
        .http
        .get(format!("http://{}/api/v1/messages", po.intake))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(intake.status().as_u16(), 404);

    // Stuck: the API, the gauge.
    let (_, body) = po.get("/api/v1/stuck", Some(TOKEN)).await;
    assert_eq!(body["count"], 1);
    assert_eq!(body["messages"][0]["queue_id"], "QOLD");
    assert!(
        po.until(Duration::from_secs(10), || async {
            po.metrics()
                .await
                .contains("hedwig_ledger_stuck_messages 1")
        })
        .await,
        "{}",
        po.metrics().await
    );
    let (_, body) = po
        .get("/api/v1/hosts/web1.example.com/hourly", Some(TOKEN))
        .await;
    let total: u64 = body["hours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["outcome"] == "queued")
        .map(|h| h["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "{body}");

    // What a sender or a remote server chose reaches the terminal escaped: a Message-ID with
    // an OSC title sequence, a recipient with a screen clear, a reply that forges a line.
    let mut evil = queued("QEVIL", t - 10_000, &["x\u{1b}[2J@example.org"]);
    if let What::Queued(q) = &mut evil.what {
        q.message_id = Some("id\u{1b}]0;pwned\u{7}@example.com".into());
        q.sender = "app\u{9b}31m@example.com".into();
    }
    let mut reply = attempt(
        "QEVIL",
        t - 5_000,
        "x\u{1b}[2J@example.org",
        Outcome::Sent,
        250,
    );
    if let What::Recipient(r) = &mut reply.what {
        r.reply = "250 ok\r\nmessage FAKE  sent".into();
        r.mx = Some("mx\u{1b}[1Aevil".into());
    }
    put_events(&beanstalkd.url(), vec![evil, reply]).await;
    assert!(
        po.until(Duration::from_secs(20), || async {
            po.get("/api/v1/messages/QEVIL", Some(TOKEN)).await.1["message"]["status"] == "sent"
        })
        .await,
        "the writer stored the hostile events"
    );

    // The command line reads the same store.
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(&config, format!("ledger:\n  url: \"{url}\"\n")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["trace", "QL1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("message QL1  sent"), "{text}");
    assert!(text.contains("bob@example.org  deferred  451"), "{text}");
    let out = run(&["trace", "<QL2@example.com>", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["message"]["queue_id"], "QL2");
    let out = run(&["trace", "carol@example.org"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("message QL2"));
    assert_eq!(run(&["trace", "nothing-like-it"]).status.code(), Some(1));
    let out = run(&["trace", "QEVIL"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout
            .iter()
            .any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f)
            && !text.contains('\u{9b}'),
        "control characters reached the terminal: {text:?}"
    );
    assert!(
        text.contains("message-id <id\\u{1b}]0;pwned\\u{7}@example.com>"),
        "{text}"
    );
    assert!(text.contains("x\\u{1b}[2J@example.org  sent"), "{text}");
    assert!(text.contains("via mx\\u{1b}[1Aevil"), "{text}");
    assert!(text.contains("app\\u{9b}31m@example.com"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("message ")).count(),
        1,
        "{text}"
    );
    // `stats` adds the ledger's per-host counts of the last 24 hours (QOLD is older).
    let out = run(&["stats", "--beanstalkd", &beanstalkd.url(), "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let web1 = &json["ledger"]["by_host"]["web1.example.com"];
    assert_eq!(web1["queued"], 3, "{json}");
    assert_eq!(web1["sent"], 2, "{json}");
    assert_eq!(web1["bounced"], 1, "{json}");
    assert_eq!(web1["deferred"], 1, "{json}");
    let out = run(&["stats", "--beanstalkd", &beanstalkd.url()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ledger, last 24 hours, by host"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("web1.example.com") && l.contains(" 3 ")),
        "{text}"
    );
    let out = run(&["stuck", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["count"], 1);
    assert!(String::from_utf8_lossy(&run(&["stuck"]).stdout).contains("message QOLD"));
    // `show` finds what left beanstalkd in the ledger.
    let out = run(&["show", "QL2", "--beanstalkd", &beanstalkd.url()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("the ledger has its history"), "{text}");
    assert!(text.contains("carol@example.org  bounced  550"), "{text}");
    let out = run(&["show", "NOPE", "--beanstalkd", &beanstalkd.url()]);
    assert!(!out.status.success());
    // A store that does not exist is reported, not made.
    let missing = dir.path().join("nothing/ledger.db");
    std::fs::write(
        &config,
        format!("ledger:\n  url: \"sqlite://{}\"\n", missing.display()),
    )
    .unwrap();
    let out = run(&["trace", "QL1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no ledger at ") && stderr.contains("ledger.writer"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line, said once: {stderr}");
    assert!(!missing.exists() && !dir.path().join("nothing").exists());
    // check-config opens the store of a post office that uses it.
    std::fs::write(
        &config,
        format!(
            "beanstalkd: \"{}\"\nsecret: \"{SECRET}\"\nledger:\n  writer: true\n  url: \"postgres://hedwig@127.0.130.50:{}/none\"\n",
            beanstalkd.url(),
            hedwig_testkit::net::free_port(ip)
        ),
    )
    .unwrap();
    let out = run(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("ledger.url (postgres://"), "{text}");
    // check-config changes nothing: a SQLite store that does not exist yet is not made (the
    // post office makes it at start), and that is not a problem.
    std::fs::write(
        &config,
        format!(
            "beanstalkd: \"{}\"\nsecret: \"{SECRET}\"\nledger:\n  writer: true\n  url: \"sqlite://{}\"\n",
            beanstalkd.url(),
            missing.display()
        ),
    )
    .unwrap();
    let out = run(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("does not exist yet"), "{text}");
    assert!(!missing.exists() && !dir.path().join("nothing").exists());
    po.stop().await;
}

/// The admin API has the intake's connection handling: a client that stalls in its headers is
/// closed at `header_timeout`, and a flood of connections stays within the API's cap while a
/// real request is still answered.
#[tokio::test]
async fn api_closes_stalled_clients_and_caps_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = Ipv4Addr::new(127, 0, 130, 53);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let po = Running::start_with(ip, &beanstalkd, &url, dir.path(), |c| {
        c.header_timeout = Duration::from_secs(1);
    })
    .await;

    let mut stalled = tokio::net::TcpStream::connect(po.api).await.unwrap();
    stalled
        .write_all(b"GET /api/v1/stuck HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a client stalled in its headers is closed: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut flood = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(po.api).await {
            flood.push(s);
        }
    }
    let metrics = po.metrics().await;
    let open: f64 = metrics
        .lines()
        .find(|l| l.starts_with("hedwig_postoffice_api_connections_open"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no api_connections_open in {metrics}"));
    assert!(open <= 64.0, "api connections open: {open}");
    assert!(
        metrics.contains("hedwig_postoffice_api_connections_closed_total{reason="),
        "{metrics}"
    );
    // Idle connections older than the shed grace give way to a new one.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = po.get("/api/v1/stuck", Some(TOKEN)).await;
    assert_eq!(status, 200, "a real request is answered during the flood");
    drop(flood);
    po.stop().await;
}

#[tokio::test]
async fn store_down_means_503_and_intake_goes_on() {
    let ip = Ipv4Addr::new(127, 0, 130, 52);
    let beanstalkd = Beanstalkd::start_on(ip);
    let mut pg = Postgres::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let po = Running::start(ip, &beanstalkd, &pg.url(), dir.path()).await;
    put_events(
        &beanstalkd.url(),
        vec![queued("QP1", now(), &["bob@example.org"])],
    )
    .await;
    assert!(
        po.until(Duration::from_secs(20), || async {
            po.get("/api/v1/messages/QP1", Some(TOKEN)).await.0 == 200
        })
        .await
    );

    pg.stop();
    assert!(
        po.until(Duration::from_secs(20), || async {
            po.get("/api/v1/messages/QP1", Some(TOKEN)).await.0 == 503
        })
        .await
    );
    // Intake does not depend on the ledger.
    let key = hedwig_core::key::derive_key(SECRET, "web1.example.com");
    let mail = email(&["bob@example.org"], "Subject: hi\r\n\r\nbody\r\n").to_string();
    let posted = po
        .http
        .post(format!("http://{}/", po.intake))
        .form(&[
            ("fqdn", "web1.example.com"),
            ("key", &key),
            ("email", &mail),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);
    // Events put meanwhile wait, and arrive after the store is back.
    put_events(
        &beanstalkd.url(),
        vec![queued("QP2", now(), &["bob@example.org"])],
    )
    .await;
    pg.restart();
    assert!(
        po.until(Duration::from_secs(60), || async {
            po.get("/api/v1/messages/QP2", Some(TOKEN)).await.0 == 200
        })
        .await,
        "events written after the outage"
    );
    po.stop().await;
}

/// The real binary with `ledger.writer: true`, SIGKILLed while it writes: after a restart
/// every event is in the store once and the counts are not doubled.
#[tokio::test]
async fn writer_sigkilled_mid_stream_loses_and_duplicates_nothing() {
    let ip = Ipv4Addr::new(127, 0, 130, 54);
    let beanstalkd = Beanstalkd::start_on(ip);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"{ip}:{}\"\nbeanstalkd: \"{}\"\nsecret: \"{SECRET}\"\ndata_dir: \"{}\"\n\
             ledger:\n  writer: true\n",
            hedwig_testkit::net::free_port(ip),
            beanstalkd.url(),
            dir.path().display()
        ),
    )
    .unwrap();
    // 2,000 messages, 2 events each, 10 messages per job.
    let t = now();
    for job in 0..200 {
        let mut events = Vec::new();
        for m in 0..10 {
            let id = format!("K{job}-{m}");
            events.push(queued(&id, t + job, &["bob@example.org"]));
            events.push(attempt(
                &id,
                t + job + 1,
                "bob@example.org",
                Outcome::Sent,
                250,
            ));
        }
        put_events(&beanstalkd.url(), events).await;
    }
    let total = 4000;
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // The store exists once the post office opened it; read it beside the writer (WAL).
    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        assert!(
            Instant::now() < deadline,
            "the post office never opened its ledger"
        );
        if dir.path().join("ledger.db").exists() {
            if let Ok(store) = hedwig_ledger::Store::open(&url).await {
                break store;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let count = || async { store.event_count().await.unwrap_or(0) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count().await == 0 {
        assert!(Instant::now() < deadline, "nothing written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    let at_kill = count().await;
    eprintln!("ledger: post office SIGKILLed with {at_kill} of {total} events written");

    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count().await < total {
        assert!(Instant::now() < deadline, "{} of {total}", count().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every job deleted once written.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = beanstalk::Client::connect(beanstalkd.url()).await.unwrap();
        let left = c
            .stats_tube("hedwig-events")
            .await
            .map(|s| s.current_jobs_ready().unwrap_or(0) + s.current_jobs_reserved().unwrap_or(0))
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} jobs left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(count().await, total, "killed at {at_kill}");
    let hours = store
        .hourly("web1.example.com", 0, u64::MAX / 2)
        .await
        .unwrap();
    let sum = |o: &str| -> u64 {
        hours
            .iter()
            .filter(|h| h.outcome == o)
            .map(|h| h.count)
            .sum()
    };
    assert_eq!(
        (sum("queued"), sum("sent")),
        (2000, 2000),
        "killed at {at_kill}"
    );
    let page = store
        .search(&hedwig_ledger::Filter {
            status: Some(hedwig_ledger::MessageStatus::Sent),
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 500);
}

/// A PostgreSQL that is down when the post office starts: intake works, the API answers 503,
/// and the store is opened (and migrated) once the server is up.
#[tokio::test]
async fn a_store_down_at_start_is_opened_later() {
    let ip = Ipv4Addr::new(127, 0, 130, 56);
    let beanstalkd = Beanstalkd::start_on(ip);
    let mut pg = Postgres::start_on(ip);
    pg.stop();
    let dir = tempfile::tempdir().unwrap();
    let po = Running::start(ip, &beanstalkd, &pg.url(), dir.path()).await;
    assert_eq!(po.get("/api/v1/stuck", Some(TOKEN)).await.0, 503);
    let health = po
        .http
        .get(format!("http://{}/health", po.intake))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    put_events(
        &beanstalkd.url(),
        vec![queued("QS1", now(), &["bob@example.org"])],
    )
    .await;
    pg.restart();
    assert!(
        po.until(Duration::from_secs(60), || async {
            po.get("/api/v1/messages/QS1", Some(TOKEN)).await.0 == 200
        })
        .await,
        "the store was opened and the waiting events written"
    );
    po.stop().await;
}
