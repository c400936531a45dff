//! The events emitter against a real beanstalkd: group commit (many concurrent calls, fewer
//! jobs), batches within beanstalkd's default job size, an outage (calls fail, then work
//! again once the server is back), and a server that stops answering (not waited for again).

use std::time::Duration;

use hedwig_queue::emit::{EmitError, Emitter, Limits};
use hedwig_queue::event::{Batch, Event, Outcome, RecipientEvent, What};
use hedwig_queue::Tubes;
use hedwig_testkit::Beanstalkd;

fn event(queue_id: &str, recipient: &str) -> Event {
    Event::now(
        queue_id,
        What::Recipient(RecipientEvent {
            recipient: recipient.into(),
            outcome: Outcome::Sent,
            mx: Some("mx.example.test".into()),
            ip: Some("192.0.2.1".into()),
            tls: Some(true),
            code: Some(250),
            dsn: Some("2.0.0".into()),
            reply: "250 2.0.0 ok queued as 12345".into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    )
}

/// Every job in the events tube, decoded (reserved and deleted).
async fn drain(url: &str, tubes: &Tubes) -> Vec<Batch> {
    let mut c = beanstalk::Client::connect(url.to_owned()).await.unwrap();
    c.watch(tubes.events()).await.unwrap();
    c.ignore("default").await.unwrap();
    let mut batches = Vec::new();
    for _ in 0..100_000 {
        match c.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                batches.push(Batch::decode(&job.body).unwrap());
                c.delete(job.id).await.unwrap();
            }
            Err(beanstalk::Error::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_jobs() {
    let bs = Beanstalkd::start();
    let tubes = Tubes::new("em").unwrap();
    let emitter = Emitter::new(bs.url(), &tubes);
    let n = 400;
    let mut calls = tokio::task::JoinSet::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let e = event(&format!("Q{i}"), "a@example.org");
        sent.push(e.id.clone());
        let emitter = emitter.clone();
        calls.spawn(async move { emitter.emit(vec![e]).await });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap().unwrap();
    }
    let batches = drain(&bs.url(), &tubes).await;
    let mut got: Vec<String> = batches
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.id.clone()))
        .collect();
    println!(
        "group commit: {n} events from {n} concurrent calls in {} jobs",
        batches.len()
    );
    assert!(
        batches.len() < n,
        "{} jobs for {n} events: no group commit",
        batches.len()
    );
    assert_eq!(emitter.jobs_put(), batches.len() as u64);
    assert_eq!(emitter.events_put(), n as u64);
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every event exactly once");
}

#[tokio::test]
async fn large_calls_are_split_below_the_default_job_size() {
    // beanstalkd's own default limit: every job must fit.
    let bs = Beanstalkd::start_with_max_job_size(65_535);
    let tubes = Tubes::default();
    let emitter = Emitter::new(bs.url(), &tubes);
    let events: Vec<Event> = (0..3000)
        .map(|i| event("Q1", &format!("recipient{i}@example.org")))
        .collect();
    emitter.emit(events.clone()).await.unwrap();
    let batches = drain(&bs.url(), &tubes).await;
    assert!(batches.len() > 1, "{} jobs", batches.len());
    let got: Vec<Event> = batches.into_iter().flat_map(|b| b.events).collect();
    assert_eq!(got, events, "all of them, in order");
    // An empty call puts nothing.
    emitter.emit(vec![]).await.unwrap();
    assert!(drain(&bs.url(), &tubes).await.is_empty());
}

#[tokio::test]
async fn an_outage_fails_calls_and_the_backlog_is_put_after_it() {
    let mut bs = Beanstalkd::start();
    let tubes = Tubes::default();
    let limits = Limits {
        retry_after: Duration::from_millis(200),
        backlog_retry: Duration::from_millis(100),
        ..Limits::default()
    };
    let emitter = Emitter::with_limits(bs.url(), &tubes, limits);
    let before = event("Q1", "a@example.org");
    emitter.emit(vec![before.clone()]).await.unwrap();

    bs.stop();
    let down = event("Q2", "b@example.org");
    assert!(emitter.emit(vec![down.clone()]).await.is_err());
    // While it is down calls fail (a refused connection, at once); record() says so.
    let also_down = event("Q3", "c@example.org");
    assert!(!emitter.record(vec![also_down.clone()]).await);
    assert_eq!(emitter.backlog(), 2, "both wait in the backlog");

    // Back, and no call comes: the backlog is put by itself.
    bs.restart();
    let mut flushed = false;
    for _ in 0..100 {
        if emitter.backlog() == 0 {
            flushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(flushed, "the backlog is put once the server is back");
    let after = event("Q4", "d@example.org");
    assert!(emitter.record(vec![after.clone()]).await);
    let got: Vec<String> = drain(&bs.url(), &tubes)
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .map(|e| e.id)
        .collect();
    // Every event once, in the order they were emitted (the first survived the restart in
    // the binlog).
    assert_eq!(got, [before.id, down.id, also_down.id, after.id]);
    assert_eq!(emitter.events_dropped(), 0);
}

#[tokio::test]
async fn a_full_backlog_drops_the_oldest_and_counts_them() {
    let mut bs = Beanstalkd::start();
    let tubes = Tubes::default();
    let one = serde_json::to_vec(&event("Q0", "a@example.org"))
        .unwrap()
        .len();
    let limits = Limits {
        backlog_bytes: one * 3 + one / 2,
        backlog_retry: Duration::from_millis(100),
        ..Limits::default()
    };
    let emitter = Emitter::with_limits(bs.url(), &tubes, limits);
    bs.stop();
    let events: Vec<Event> = (0..5)
        .map(|i| event(&format!("Q{i}"), "a@example.org"))
        .collect();
    for e in &events {
        assert!(emitter.emit(vec![e.clone()]).await.is_err());
    }
    assert_eq!(emitter.events_dropped(), 2, "the two oldest went");
    assert_eq!(emitter.backlog(), 3);
    bs.restart();
    let newest = event("Q9", "a@example.org");
    let mut ok = false;
    for _ in 0..100 {
        if emitter.record(vec![newest.clone()]).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok);
    let got: Vec<String> = drain(&bs.url(), &tubes)
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .map(|e| e.queue_id)
        .collect();
    assert_eq!(got.first().map(String::as_str), Some("Q2"), "{got:?}");
    assert_eq!(&got[..3], ["Q2", "Q3", "Q4"]);
    assert_eq!(got.iter().filter(|q| *q == "Q9").count(), 1, "{got:?}");
}

#[tokio::test]
async fn an_emitter_dropped_with_a_backlog_puts_it_on_the_way_out() {
    let mut bs = Beanstalkd::start();
    let tubes = Tubes::default();
    let limits = Limits {
        // No retry of its own before the end: only the last try can put it.
        backlog_retry: Duration::from_secs(600),
        ..Limits::default()
    };
    let emitter = Emitter::with_limits(bs.url(), &tubes, limits);
    bs.stop();
    let kept = event("Q1", "a@example.org");
    assert!(emitter.emit(vec![kept.clone()]).await.is_err());
    bs.restart();
    drop(emitter);
    let mut got = Vec::new();
    for _ in 0..100 {
        got = drain(&bs.url(), &tubes).await;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = got
        .into_iter()
        .flat_map(|b| b.events)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [kept.id]);
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_not_waited_for_again() {
    let bs = Beanstalkd::start();
    let pid = bs.pid().unwrap();
    let tubes = Tubes::default();
    let limits = Limits {
        connect_timeout: Duration::from_millis(300),
        io_timeout: Duration::from_millis(300),
        retry_after: Duration::from_secs(600),
        ..Limits::default()
    };
    let emitter = Emitter::with_limits(bs.url(), &tubes, limits);
    emitter
        .emit(vec![event("Q1", "a@example.org")])
        .await
        .unwrap();
    signal(pid, "STOP");
    let first = emitter.emit(vec![event("Q2", "b@example.org")]).await;
    let second = emitter.emit(vec![event("Q3", "c@example.org")]).await;
    signal(pid, "CONT");
    assert!(
        matches!(first, Err(EmitError::Put { .. })),
        "the put times out: {first:?}"
    );
    assert!(
        matches!(second, Err(EmitError::Down { .. })),
        "then calls fail without trying: {second:?}"
    );
}
