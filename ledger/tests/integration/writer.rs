//! The writer with a real beanstalkd: events reach the store, a writer stopped between its
//! commit and its deletes duplicates nothing, a store outage loses nothing, bad jobs are
//! buried.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use beanstalk::Client;
use hedwig_ledger::writer::{self, WriterConfig, WriterStats};
use hedwig_ledger::Store;
use hedwig_queue::event::{Batch, Outcome};
use hedwig_testkit::Beanstalkd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, outcome, queued, Stores};

const TUBE: &str = "ledgertest-events";
const T0: u64 = 1_800_000_000_000;

/// Puts `n` jobs, each a batch of a message's `queued` and `sent` events; returns the number
/// of events.
async fn put_batches(server: &str, first: usize, n: usize) -> u64 {
    let mut c = Client::connect(server).await.unwrap();
    c.use_tube(TUBE).await.unwrap();
    for i in first..first + n {
        let id = format!("M{i}");
        let at = T0 + i as u64;
        let batch = Batch::new(vec![
            queued(&id, at, "web1", "a@b.test", &["c@d.test"]),
            outcome(&id, at + 1, "c@d.test", Outcome::Sent, 1),
        ]);
        c.put(
            &batch.encode(),
            1024,
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    }
    2 * n as u64
}

/// Jobs in the tube: (ready + delayed + reserved, buried).
async fn jobs(server: &str) -> (u64, u64) {
    let mut c = Client::connect(server).await.unwrap();
    match c.stats_tube(TUBE).await {
        Ok(s) => (
            s.current_jobs_ready().unwrap_or(0)
                + s.current_jobs_delayed().unwrap_or(0)
                + s.current_jobs_reserved().unwrap_or(0),
            s.current_jobs_buried().unwrap_or(0),
        ),
        Err(_) => (0, 0),
    }
}

fn config(servers: Vec<String>) -> WriterConfig {
    let mut config = WriterConfig::new(servers, TUBE);
    config.max_events = 50;
    config.max_wait = Duration::from_millis(50);
    config.backoff = Duration::from_millis(200);
    config.max_backoff = Duration::from_millis(500);
    config
}

fn start(
    store: &Store,
    config: WriterConfig,
) -> (
    Arc<WriterStats>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let stats = Arc::new(WriterStats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(writer::run(
        store.clone(),
        config,
        stats.clone(),
        shutdown.clone(),
    ));
    (stats, shutdown, task)
}

async fn count(store: &Store) -> u64 {
    store.event_count().await.unwrap_or(0)
}

#[tokio::test]
async fn events_from_two_servers_reach_the_store_and_bad_jobs_are_buried() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 20)).await;
    let b1 = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 21));
    let b2 = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 22));
    for (name, store) in stores.each() {
        let offset = if name == "sqlite" { 0 } else { 1000 };
        let mut total = put_batches(&b1.url(), offset, 120).await;
        total += put_batches(&b2.url(), offset + 500, 80).await;
        let mut c = Client::connect(b1.url()).await.unwrap();
        c.use_tube(TUBE).await.unwrap();
        c.put(b"not json", 1024, Duration::ZERO, Duration::from_secs(60))
            .await
            .unwrap();

        let (stats, shutdown, task) = start(store, config(vec![b1.url(), b2.url()]));
        assert!(
            eventually(Duration::from_secs(30), || async {
                count(store).await == total
            })
            .await,
            "{name}: {} of {total} events",
            count(store).await
        );
        assert!(
            eventually(Duration::from_secs(10), || async {
                jobs(&b1.url()).await == (0, 1) && jobs(&b2.url()).await == (0, 0)
            })
            .await,
            "{name}: jobs left {:?} {:?}",
            jobs(&b1.url()).await,
            jobs(&b2.url()).await
        );
        assert_eq!(stats.jobs_buried.load(Ordering::Relaxed), 1);
        assert_eq!(stats.events_written.load(Ordering::Relaxed), total);
        let t = store
            .timeline(&format!("M{}", offset + 500))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(t.message.status, hedwig_ledger::MessageStatus::Sent);
        shutdown.cancel();
        task.await.unwrap();
        // Clear the buried job for the next store's round.
        let mut c = Client::connect(b1.url()).await.unwrap();
        c.use_tube(TUBE).await.unwrap();
        let job = c.peek_buried().await.unwrap();
        c.delete(job.id).await.unwrap();
    }
}

#[tokio::test]
async fn a_batch_of_many_jobs_is_gathered_and_deleted_in_pipelines() {
    // 300 jobs waiting before the writer starts: more than one pipeline of reserves and of
    // deletes (64 each), fewer events than one batch holds, so one transaction takes them.
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 30)).await;
    let b = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 31));
    for (name, store) in stores.each() {
        let offset = if name == "sqlite" { 0 } else { 1000 };
        let total = put_batches(&b.url(), offset, 300).await;
        let mut big = config(vec![b.url()]);
        big.max_events = 1000;
        big.max_wait = Duration::from_millis(500);
        let (stats, shutdown, task) = start(store, big);
        assert!(
            eventually(Duration::from_secs(30), || async {
                count(store).await == total && jobs(&b.url()).await == (0, 0)
            })
            .await,
            "{name}: {} of {total} events, jobs left {:?}",
            count(store).await,
            jobs(&b.url()).await
        );
        assert_eq!(stats.events_written.load(Ordering::Relaxed), total);
        assert_eq!(
            stats.batches.load(Ordering::Relaxed),
            1,
            "{name}: all 300 jobs in one batch"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn jobs_of_many_events_keep_a_batch_near_max_events() {
    // Six jobs of 20 events, max_events 50: the first batch takes three (20 + 20 + 20, over
    // by its last job only) and gives the three it reserved beyond back; the second takes
    // those. One batch of all 120 would mean the reserved surplus was kept.
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 32)).await;
    let b = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 33));
    for (name, store) in stores.each() {
        let offset = if name == "sqlite" { 0 } else { 1000 };
        let mut c = Client::connect(b.url()).await.unwrap();
        c.use_tube(TUBE).await.unwrap();
        for j in 0..6 {
            let id = format!("M{}", offset + j);
            let mut events = vec![queued(&id, T0, "web1", "a@b.test", &["c@d.test"])];
            for k in 1..20 {
                events.push(outcome(
                    &id,
                    T0 + k,
                    "c@d.test",
                    Outcome::Deferred,
                    k as u32,
                ));
            }
            let body = Batch::new(events).encode();
            c.put(&body, 1024, Duration::ZERO, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let (stats, shutdown, task) = start(store, config(vec![b.url()]));
        assert!(
            eventually(Duration::from_secs(30), || async {
                count(store).await == 120 && jobs(&b.url()).await == (0, 0)
            })
            .await,
            "{name}: {} events, jobs left {:?}",
            count(store).await,
            jobs(&b.url()).await
        );
        assert_eq!(stats.batches.load(Ordering::Relaxed), 2, "{name}");
        shutdown.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_writer_stopped_after_its_commit_duplicates_nothing() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 23)).await;
    let b = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 24));
    for (name, store) in stores.each() {
        let offset = if name == "sqlite" { 0 } else { 1000 };
        let total = put_batches(&b.url(), offset, 10).await;
        let stall = Arc::new(Notify::new());
        let mut stalled = config(vec![b.url()]);
        stalled.stall_after_commit = Some(stall.clone());
        let (_, _, task) = start(store, stalled);
        tokio::time::timeout(Duration::from_secs(30), stall.notified())
            .await
            .expect("the writer committed a batch");
        let written = count(store).await;
        assert!(written > 0 && written <= total, "{name}: {written}");
        // Killed between the commit and the deletes: its jobs come back.
        task.abort();
        let _ = task.await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                jobs(&b.url()).await.0 == 10
            })
            .await,
            "{name}: {:?}",
            jobs(&b.url()).await
        );
        let hourly_before = store.hourly("web1", 0, u64::MAX / 2).await.unwrap();

        // A new writer writes them all again: the committed ones change nothing.
        let (stats, shutdown, task) = start(store, config(vec![b.url()]));
        assert!(
            eventually(Duration::from_secs(30), || async {
                jobs(&b.url()).await.0 == 0
            })
            .await,
            "{name}"
        );
        assert_eq!(count(store).await, total, "{name}");
        assert_eq!(
            stats.events_duplicate.load(Ordering::Relaxed),
            written,
            "{name}"
        );
        let hourly = store.hourly("web1", 0, u64::MAX / 2).await.unwrap();
        let sum = |h: &[hedwig_ledger::HourlyCount], o: &str| -> u64 {
            h.iter().filter(|c| c.outcome == o).map(|c| c.count).sum()
        };
        assert_eq!(
            sum(&hourly, "sent"),
            total / 2,
            "{name}: each message sent once"
        );
        assert_eq!(sum(&hourly, "queued"), total / 2);
        assert!(sum(&hourly, "sent") >= sum(&hourly_before, "sent"));
        shutdown.cancel();
        task.await.unwrap();
        store.prune(u64::MAX / 2, 1000).await.unwrap();
    }
}

#[tokio::test]
async fn a_store_outage_loses_nothing() {
    let mut stores = Stores::start(Ipv4Addr::new(127, 0, 130, 25)).await;
    let b = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 26));
    let store = stores.postgres.clone();
    let (stats, shutdown, task) = start(&store, config(vec![b.url()]));
    let first = put_batches(&b.url(), 0, 5).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(&store).await == first
        })
        .await
    );

    stores.pg.stop();
    let total = first + put_batches(&b.url(), 5, 20).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            stats.store_errors.load(Ordering::Relaxed) >= 2
        })
        .await,
        "the writer saw the outage"
    );
    assert!(stats.store_down.load(Ordering::Relaxed));
    // Nothing was deleted: every job is still in beanstalkd.
    assert_eq!(jobs(&b.url()).await, (20, 0));

    stores.pg.restart();
    assert!(
        eventually(Duration::from_secs(60), || async {
            count(&store).await == total
        })
        .await,
        "{} of {total} after recovery",
        count(&store).await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            jobs(&b.url()).await == (0, 0)
        })
        .await
    );
    assert!(!stats.store_down.load(Ordering::Relaxed));
    shutdown.cancel();
    task.await.unwrap();
}

/// A small tmpfs for the SQLite file, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. "4m"). Needs root, as CI runs (the fault-injection run
    /// needs it too).
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "hedwig-ledger-test",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a small tmpfs needs root (CI runs as root)"
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system at `dir` with a file until it is full; returns the file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    // Bounded: a tmpfs of a few MB is full long before this.
    for _ in 0..100_000 {
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            break;
        }
    }
    path
}

#[tokio::test]
async fn a_full_disk_stops_the_writer_and_it_resumes_losing_nothing() {
    let disk = SmallDisk::mount("4m");
    let url = format!("sqlite://{}/ledger.db", disk.dir.path().display());
    let store = Store::open(&url).await.unwrap();
    let b = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 27));
    let (stats, shutdown, task) = start(&store, config(vec![b.url()]));
    let first = put_batches(&b.url(), 0, 5).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(&store).await == first
        })
        .await
    );

    let filler = fill(disk.dir.path());
    let total = first + put_batches(&b.url(), 5, 300).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            stats.store_errors.load(Ordering::Relaxed) >= 1
        })
        .await,
        "the writer saw the full disk"
    );
    assert!(stats.store_down.load(Ordering::Relaxed));
    let stored = count(&store).await;
    assert!(stored < total, "{stored} of {total} stored on a full disk");
    let (waiting, buried) = jobs(&b.url()).await;
    assert!(waiting > 0, "the events wait in beanstalkd");
    assert_eq!(buried, 0);

    std::fs::remove_file(filler).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            count(&store).await == total
        })
        .await,
        "{} of {total} after space returned",
        count(&store).await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            jobs(&b.url()).await == (0, 0)
        })
        .await
    );
    assert!(!stats.store_down.load(Ordering::Relaxed));
    shutdown.cancel();
    task.await.unwrap();
    store.close().await;
    drop(disk);
}

/// Puts `events` as one job into the events tube `c` uses.
async fn put_events(c: &mut Client, events: Vec<hedwig_queue::event::Event>) {
    let body = Batch::new(events).encode();
    c.put(&body, 1024, Duration::ZERO, Duration::from_secs(60))
        .await
        .unwrap();
}

/// The post office's `queued` event and the worker's copy of it (same id, `queued-<queue
/// id>`, another time) in separate jobs: the store keeps the first, the writer counts the
/// second as a duplicate whether its own memory or the store's `ON CONFLICT` caught it, and
/// the worker's `sent` beside the copy is written.
#[tokio::test]
async fn the_workers_copy_of_a_queued_event_changes_nothing() {
    let stores = Stores::start(Ipv4Addr::new(127, 0, 130, 28)).await;
    let b = Beanstalkd::start_on(Ipv4Addr::new(127, 0, 130, 29));
    for (name, store) in stores.each() {
        let id = format!("DUP-{name}");
        let mut first = queued(&id, T0, "web1", "a@b.test", &["c@d.test"]);
        first.id = hedwig_queue::event::queued_event_id(&id);
        let mut copy = queued(&id, T0 + 5_000, "web-copy", "a@b.test", &["c@d.test"]);
        copy.id = first.id.clone();
        let sent = outcome(&id, T0 + 6_000, "c@d.test", Outcome::Sent, 1);
        let (stats, shutdown, task) = start(store, config(vec![b.url()]));
        let mut c = Client::connect(b.url()).await.unwrap();
        c.use_tube(TUBE).await.unwrap();
        put_events(&mut c, vec![first]).await;
        assert!(
            eventually(Duration::from_secs(30), || async {
                stats.events_written.load(Ordering::Relaxed) == 1
            })
            .await,
            "{name}: the post office's event written"
        );
        put_events(&mut c, vec![copy, sent]).await;
        assert!(
            eventually(Duration::from_secs(30), || async {
                jobs(&b.url()).await == (0, 0) && stats.events_written.load(Ordering::Relaxed) == 2
            })
            .await,
            "{name}: {:?}, {} written",
            jobs(&b.url()).await,
            stats.events_written.load(Ordering::Relaxed)
        );
        assert_eq!(stats.events_duplicate.load(Ordering::Relaxed), 1, "{name}");
        let t = store.timeline(&id).await.unwrap().expect("on record");
        assert_eq!(
            t.message.host.as_deref(),
            Some("web1"),
            "{name}: the first copy kept"
        );
        assert_eq!(
            t.message.status,
            hedwig_ledger::MessageStatus::Sent,
            "{name}"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}
