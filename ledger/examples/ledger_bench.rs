//! Ledger benchmark: prints figures, asserts nothing.
//!
//! 1. Ingest: messages of 3 events each (queued, deferred, sent), written with
//!    `Store::write` in batches of 1,000 events (the writer's default), into SQLite (a file
//!    in a temp dir) and PostgreSQL (a private server from the testkit on 127.0.130.40):
//!    events/s, and the SQLite file size per million messages.
//! 2. Search: 1,000,000 messages (1 recipient each, every recipient in ~5 messages) made in
//!    bulk with one `INSERT ... SELECT` over a recursive CTE (the same SQL on both), then
//!    `Store::search` by recipient (limit 50) for random recipients: median and worst.
//!
//! `cargo run --release -p hedwig-ledger --example ledger_bench [messages_to_ingest]`
//! (default 20,000 messages = 60,000 events). `LEDGER_BENCH_ROWS` changes the 1,000,000 (0: ingest
//! only).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hedwig_ledger::{Filter, Store};
use hedwig_queue::event::{Event, Outcome, Queued, RecipientEvent, What};
use rand::Rng;
use sqlx::Executor;

const T0: u64 = 1_800_000_000_000;

fn events_of(i: u64) -> [Event; 3] {
    let queue_id = format!("I{i:09}");
    let at = T0 + i * 10;
    let recipient = format!("user{}@example.test", i % 10_000);
    let r = |id: &str, at: u64, outcome: Outcome, code: u16| Event {
        id: format!("{queue_id}-{id}"),
        at,
        queue_id: queue_id.clone(),
        what: What::Recipient(RecipientEvent {
            recipient: recipient.clone(),
            outcome,
            mx: Some("mx1.example.test".into()),
            ip: Some("192.0.2.25".into()),
            tls: Some(true),
            code: Some(code),
            dsn: Some(if code == 250 { "2.0.0" } else { "4.7.1" }.into()),
            reply: format!("{code} queued as ABCDEF{i}"),
            attempt: Some(if code == 250 { 2 } else { 1 }),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    };
    [
        Event {
            id: format!("{queue_id}-q"),
            at,
            queue_id: queue_id.clone(),
            what: What::Queued(Queued {
                host: format!("web{}.example.test", i % 50),
                sender: format!("app{}@example.test", i % 100),
                recipients: vec![recipient.clone()],
                size: 4096,
                message_kind: "message".into(),
                edge_id: Some(format!("edge{i}")),
                edge_client: Some("172.17.0.5".into()),
                post_client: Some("10.0.0.7".into()),
                message_id: Some(format!("{queue_id}@app.example.test")),
                subject: Some("Your password reset".into()),
                bounce_of: None,
                expires_at: Some(at / 1000 + 5 * 86_400),
                held: false,
                app: None,
                lane: None,
                fixups: Vec::new(),
            }),
        },
        r("d", at + 3, Outcome::Deferred, 451),
        r("s", at + 5, Outcome::Sent, 250),
    ]
}

async fn ingest(name: &str, store: &Store, messages: u64) -> anyhow_free::Result<()> {
    let mut batch = Vec::with_capacity(1000);
    let started = Instant::now();
    let mut written = 0;
    // Events arrive interleaved across messages, as from many workers: queued events of a
    // block of messages, then their deferrals, then their deliveries.
    for block in (0..messages).collect::<Vec<_>>().chunks(333) {
        for phase in 0..3 {
            for &i in block {
                batch.push(events_of(i)[phase].clone());
                if batch.len() == 1000 {
                    written += store.write(&batch).await?;
                    batch.clear();
                }
            }
        }
    }
    written += store.write(&batch).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: ingest {written} events ({messages} messages) in {secs:.2} s: {:.0} events/s",
        written as f64 / secs
    );
    Ok(())
}

/// The 1M-message corpus, made in the database with one statement per table.
async fn bulk(url: &str, rows: u64) -> anyhow_free::Result<Duration> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await?;
    let started = Instant::now();
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
             'Your password reset', 4096, 'message', {T0} + i * 10, NULL, 1, 'sent', \
             {T0} + i * 10 + 5, {T0} + i * 10 + 5 FROM s"
        )
        .as_str(),
    )
    .await?;
    tx.execute(
        format!(
            "{series} INSERT INTO recipients (queue_id, recipient, queued_at, status, \
             attempts, code, dsn, reply, mx, updated_at, is_final) \
             SELECT 'B' || i, 'user' || (i % {}) || '@example.test', {T0} + i * 10, 'sent', 1, \
             250, '2.0.0', '250 ok', 'mx1.example.test', {T0} + i * 10 + 5, 1 FROM s",
            rows / 5
        )
        .as_str(),
    )
    .await?;
    tx.commit().await?;
    pool.execute("ANALYZE").await?;
    pool.close().await;
    Ok(started.elapsed())
}

async fn search(name: &str, store: &Store, rows: u64) -> anyhow_free::Result<()> {
    let mut rng = rand::thread_rng();
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..200 {
        let filter = Filter {
            recipient: Some(format!("user{}@example.test", rng.gen_range(0..rows / 5))),
            limit: Some(50),
            ..Filter::default()
        };
        let started = Instant::now();
        let page = store.search(&filter).await?;
        times.push(started.elapsed());
        found += page.messages.len();
    }
    times.sort();
    println!(
        "{name}: search by recipient over {rows} messages: median {:.2} ms, p99 {:.2} ms, \
         worst {:.2} ms ({} messages found in 200 searches)",
        ms(times[100]),
        ms(times[198]),
        ms(times[199]),
        found
    );
    let started = Instant::now();
    let page = store
        .search(&Filter {
            sender: Some("app7@example.test".into()),
            limit: Some(50),
            ..Filter::default()
        })
        .await?;
    println!(
        "{name}: search by sender (10,000 messages each), first page of {}: {:.2} ms",
        page.messages.len(),
        ms(started.elapsed())
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

mod anyhow_free {
    /// Any error, printed.
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

#[tokio::main]
async fn main() -> anyhow_free::Result<()> {
    let messages: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rows: u64 = std::env::var("LEDGER_BENCH_ROWS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);

    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}/ledger.db", dir.path().display());
    let sqlite = Store::open(&sqlite_url).await?;
    ingest("sqlite", &sqlite, messages).await?;
    // The database file alone, after the WAL was copied into it.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_all(&sqlx::AnyPool::connect(&sqlite_url).await?)
        .await?;
    let size = std::fs::metadata(dir.path().join("ledger.db"))?.len();
    println!(
        "sqlite: database file {size} bytes for {messages} messages: {:.0} MB per million \
         messages of 3 events",
        size as f64 / messages as f64 * 1e6 / 1e6
    );

    let pg = hedwig_testkit::Postgres::start_on(Ipv4Addr::new(127, 0, 130, 40));
    let postgres = Store::open(&pg.url()).await?;
    ingest("postgres", &postgres, messages).await?;

    let pg_url = pg.url();
    if rows == 0 {
        return Ok(());
    }
    for (name, url, store) in [
        ("sqlite", sqlite_url.as_str(), &sqlite),
        ("postgres", pg_url.as_str(), &postgres),
    ] {
        let took = bulk(url, rows).await?;
        println!(
            "{name}: bulk-made {rows} messages in {:.1} s",
            took.as_secs_f64()
        );
        search(name, store, rows).await?;
    }
    Ok(())
}
