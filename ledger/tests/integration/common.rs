//! Stores on both backends and event builders.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hedwig_ledger::Store;
use hedwig_queue::event::{new_event_id, Event, Outcome, Queued, RecipientEvent, What};
use hedwig_testkit::Postgres;

/// The same store on both backends: a SQLite file and a database on a private PostgreSQL.
pub struct Stores {
    pub sqlite: Store,
    pub postgres: Store,
    pub sqlite_url: String,
    pub pg: Postgres,
    pub dir: tempfile::TempDir,
}

impl Stores {
    /// Fresh stores; PostgreSQL listens on `ip`.
    pub async fn start(ip: Ipv4Addr) -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}/sub/ledger.db", dir.path().display());
        let pg = Postgres::start_on(ip);
        Stores {
            sqlite: Store::open(&sqlite_url).await.expect("open sqlite"),
            postgres: Store::open(&pg.url()).await.expect("open postgres"),
            sqlite_url,
            pg,
            dir,
        }
    }

    /// Both stores with their names, for `for (name, store) in stores.each()`.
    pub fn each(&self) -> [(&'static str, &Store); 2] {
        [("sqlite", &self.sqlite), ("postgres", &self.postgres)]
    }
}

/// A `queued` event of `queue_id` at `at` (ms).
pub fn queued(queue_id: &str, at: u64, host: &str, sender: &str, recipients: &[&str]) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Queued(Queued {
            host: host.into(),
            sender: sender.into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            size: 1234,
            message_kind: "message".into(),
            edge_id: Some(format!("edge-{queue_id}")),
            edge_client: Some("172.17.0.5".into()),
            post_client: Some("127.0.130.99".into()),
            message_id: Some(format!("<{queue_id}@app.test>")),
            subject: Some(format!("Subject of {queue_id}")),
            bounce_of: None,
            expires_at: Some(at / 1000 + 5 * 86_400),
            held: false,
            app: None,
            lane: None,
            fixups: Vec::new(),
        }),
    }
}

/// An outcome event for one recipient.
pub fn outcome(queue_id: &str, at: u64, recipient: &str, outcome: Outcome, attempt: u32) -> Event {
    let (code, dsn) = match outcome {
        Outcome::Sent => (250, "2.0.0"),
        Outcome::Deferred => (451, "4.3.0"),
        _ => (550, "5.1.1"),
    };
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Recipient(RecipientEvent {
            recipient: recipient.into(),
            outcome,
            mx: Some("mx.example.test".into()),
            ip: Some("127.0.130.200".into()),
            tls: Some(true),
            code: Some(code),
            dsn: Some(dsn.into()),
            reply: format!("{code} {dsn} {outcome}"),
            attempt: Some(attempt),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    }
}

/// Polls `check` every 50 ms until it is true or `limit` passes; returns the last answer.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
