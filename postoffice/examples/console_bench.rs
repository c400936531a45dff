//! Console benchmark: how long each console page takes with a large ledger. Prints figures,
//! asserts nothing.
//!
//! Fills a SQLite ledger in a temp dir with `CONSOLE_BENCH_ROWS` messages (default
//! 1,000,000) queued over the last 24 hours (one recipient each, 50 hosts, 100 senders,
//! every recipient in about 5 messages; 80 % sent, 10 % bounced, 10 % deferred), their
//! recipients and the hourly counts, in bulk SQL; one message gets a real timeline through
//! `Store::write`. Then starts beanstalkd (testkit, 127.0.150.90) and the post office with
//! the console in this process, logs in with the admin token and GETs each page 30 times in a
//! row: median, p90 and worst, server and client on the same machine (loopback HTTP included).
//!
//! `cargo run --release -p postoffice --example console_bench`

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hedwig_queue::event::{Event, Outcome, Queued, RecipientEvent, What};
use sqlx::Executor;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "console-bench-token-0123456789";
const DAY: u64 = 86_400_000;
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 90);

async fn fill(url: &str, rows: u64, now: u64) -> Result<Duration, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await?;
    let started = Instant::now();
    let step = DAY / rows;
    let from = now - DAY;
    let series = format!(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {})",
        rows - 1
    );
    let mut tx = pool.begin().await?;
    tx.execute(
        format!(
            "{series} INSERT INTO messages (queue_id, host, sender, message_id, subject, size, \
             kind, queued_at, expires_at, recipients, status, last_event_at, final_at) \
             SELECT 'B' || i, 'web' || (i % 50) || '.example.test', \
             'app' || (i % 100) || '@example.test', 'B' || i || '@app.example.test', \
             'Your invoice ' || i, 4096, 'message', {from} + i * {step}, NULL, 1, \
             CASE WHEN i % 10 = 0 THEN 'bounced' WHEN i % 10 = 1 THEN 'deferred' ELSE 'sent' END, \
             {from} + i * {step} + 5, \
             CASE WHEN i % 10 = 1 THEN NULL ELSE {from} + i * {step} + 5 END FROM s"
        )
        .as_str(),
    )
    .await?;
    tx.execute(
        format!(
            "{series} INSERT INTO recipients (queue_id, recipient, queued_at, status, \
             attempts, code, dsn, reply, mx, updated_at, is_final) \
             SELECT 'B' || i, 'user' || (i % {}) || '@example.test', {from} + i * {step}, \
             CASE WHEN i % 10 = 0 THEN 'bounced' WHEN i % 10 = 1 THEN 'deferred' ELSE 'sent' END, \
             1, 250, '2.0.0', '250 ok', 'mx1.example.test', {from} + i * {step} + 5, \
             CASE WHEN i % 10 = 1 THEN 0 ELSE 1 END FROM s",
            (rows / 5).max(1)
        )
        .as_str(),
    )
    .await?;
    for sql in [
        "INSERT INTO hourly (host, hour, outcome, count) SELECT host, \
         (queued_at / 3600000) * 3600000, 'queued', COUNT(*) FROM messages GROUP BY 1, 2",
        "INSERT INTO hourly (host, hour, outcome, count) SELECT m.host, \
         (m.queued_at / 3600000) * 3600000, r.status, COUNT(*) FROM messages m JOIN recipients r \
         ON r.queue_id = m.queue_id GROUP BY 1, 2, 3",
    ] {
        tx.execute(sql).await?;
    }
    tx.commit().await?;
    pool.execute("ANALYZE").await?;
    pool.close().await;
    Ok(started.elapsed())
}

fn timeline(now: u64) -> Vec<Event> {
    let r = |id: &str, at: u64, outcome: Outcome, code: u16, reply: &str| Event {
        id: format!("bench-{id}"),
        at,
        queue_id: "BTIMELINE".into(),
        what: What::Recipient(RecipientEvent {
            recipient: "bob@example.test".into(),
            outcome,
            mx: Some("mx1.example.test".into()),
            ip: Some("192.0.2.25".into()),
            tls: Some(true),
            code: Some(code),
            dsn: None,
            reply: reply.into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    };
    vec![
        Event {
            id: "bench-q".into(),
            at: now - 60_000,
            queue_id: "BTIMELINE".into(),
            what: What::Queued(Queued {
                host: "web1.example.test".into(),
                sender: "app1@example.test".into(),
                recipients: vec!["bob@example.test".into()],
                size: 4096,
                message_kind: "message".into(),
                edge_id: None,
                edge_client: None,
                post_client: None,
                message_id: Some("BTIMELINE@app.example.test".into()),
                subject: Some("Timeline".into()),
                bounce_of: None,
                expires_at: None,
                held: false,
                app: None,
                lane: None,
                fixups: Vec::new(),
            }),
        },
        r(
            "d",
            now - 50_000,
            Outcome::Deferred,
            451,
            "451 4.7.1 try later",
        ),
        r("s", now - 40_000, Outcome::Sent, 250, "250 2.0.0 ok"),
    ]
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("CONSOLE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        .max(10);
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let now = hedwig_queue::event::now_millis();
    // Opened first to make the schema; the timeline after the fill (its hourly counts add up).
    let store = hedwig_ledger::Store::open(&url)
        .await
        .expect("the store opens");
    store.close().await;
    let took = fill(&url, rows, now).await.expect("the bulk fill");
    println!("filled {rows} messages in {:.1} s", took.as_secs_f64());
    let store = hedwig_ledger::Store::open(&url)
        .await
        .expect("the store opens");
    store
        .write(&timeline(now))
        .await
        .expect("the timeline is written");
    store.close().await;

    let beanstalkd = hedwig_testkit::Beanstalkd::start_on(IP);
    std::fs::write(dir.path().join("token"), TOKEN).expect("the token file");
    let api = SocketAddr::from((IP, hedwig_testkit::net::free_port(IP)));
    let mut config = postoffice::Config {
        beanstalkd: vec![beanstalkd.url()],
        secret: Some("bench-secret-0123456789abcdef0123".into()),
        data_dir: dir.path().to_path_buf(),
        ..postoffice::Config::default()
    };
    let url_again = url.clone();
    config.ledger.url = Some(url);
    config.ledger.writer = false;
    config.ledger.api_listen = Some(api);
    config.ledger.api_token_file = Some(dir.path().join("token"));
    config.console.enabled = true;
    let listener = tokio::net::TcpListener::bind((IP, 0)).await.expect("bind");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(postoffice::serve(config, listener, shutdown.clone()));
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let base = format!("http://{api}");
    let mut logged_in = false;
    for _ in 0..100 {
        let r = http
            .post(format!("{base}/console/login"))
            .form(&[("user", "bench"), ("password", TOKEN)])
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200 && r.url().path() == "/console/") {
            logged_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged_in, "logged in to the console");
    let pages = [
        ("overview", "/console/".to_owned()),
        ("messages, first page", "/console/messages".to_owned()),
        (
            "messages by host",
            "/console/messages?host=web7.example.test".to_owned(),
        ),
        (
            "messages by sender",
            "/console/messages?sender=app42%40example.test".to_owned(),
        ),
        (
            "messages by recipient",
            "/console/messages?recipient=user123%40example.test".to_owned(),
        ),
        (
            "messages by status",
            "/console/messages?status=deferred".to_owned(),
        ),
        ("message timeline", "/console/messages/BTIMELINE".to_owned()),
        ("hosts", "/console/hosts".to_owned()),
        ("failed (empty tube)", "/console/failed".to_owned()),
        ("suppression", "/console/suppressions".to_owned()),
        ("webhooks", "/console/webhooks".to_owned()),
    ];
    println!("{rows} messages in the ledger; 30 GETs per page, one at a time:");
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>9}",
        "page", "median ms", "p90 ms", "worst ms", "bytes"
    );
    for (name, path) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..30 {
            let started = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("an answer");
            let status = r.status();
            let body = r.bytes().await.expect("a body");
            times.push(started.elapsed());
            assert!(status.is_success(), "{path}: {status}");
            bytes = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<24} {:>10.1} {:>10.1} {:>10.1} {bytes:>9}",
            ms(times[15]),
            ms(times[27]),
            ms(times[29])
        );
    }
    // The overview's store queries alone on a new pool (median of 10): where a cold start's
    // time goes.
    let store = hedwig_ledger::Store::open(&url_again)
        .await
        .expect("the store opens");
    let now = hedwig_queue::event::now_millis();
    let hour = 3_600_000;
    let mut figures = Vec::new();
    for name in [
        "per_minute (1 h)",
        "domain_statuses (1 h)",
        "hourly_all (24 h)",
        "stuck_count",
    ] {
        let mut times = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            match name {
                "per_minute (1 h)" => drop(store.per_minute(now - hour, now).await),
                "domain_statuses (1 h)" => {
                    drop(store.domain_statuses(now - hour, now, 20_000).await)
                }
                "hourly_all (24 h)" => drop(store.hourly_all(now - DAY, now).await),
                _ => drop(
                    store
                        .stuck_count(now, Duration::from_secs(5 * 86_400))
                        .await,
                ),
            }
            times.push(started.elapsed());
        }
        times.sort();
        figures.push(format!("{name} {:.1} ms", times[5].as_secs_f64() * 1000.0));
    }
    println!(
        "overview queries on a new pool (its connections' page caches cold), median of 10: {}",
        figures.join(", ")
    );
    shutdown.cancel();
    let _ = server.await;
}
