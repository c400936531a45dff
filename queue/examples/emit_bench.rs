//! What the events emitter costs: events per second and per-call latency with 1, 20 and 200
//! concurrent callers emitting one event each (as delivery tasks and intake requests do),
//! against one put per event on a connection of its own. Prints figures, asserts nothing.
//!
//! `cargo run --release -p hedwig-queue --example emit_bench` (needs beanstalkd; the testkit
//! starts one on a free loopback port). Bounded: at most `EVENTS` events per figure.

use std::time::{Duration, Instant};

use hedwig_queue::emit::Emitter;
use hedwig_queue::event::{Batch, Event, Outcome, RecipientEvent, What};
use hedwig_queue::Tubes;

const EVENTS: usize = 20_000;

fn event(i: usize) -> Event {
    Event::now(
        format!("01A2345{i:017X}"),
        What::Recipient(RecipientEvent {
            recipient: format!("user{i}@example.org"),
            outcome: Outcome::Sent,
            mx: Some("mx1.example.org".into()),
            ip: Some("192.0.2.25".into()),
            tls: Some(true),
            code: Some(250),
            dsn: Some("2.0.0".into()),
            reply: "250 2.0.0 Ok: queued as 4Xyz12AbCd".into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let bs = hedwig_testkit::Beanstalkd::start();
    let tubes = Tubes::default();

    // One put per event, sequentially, on one connection: the cost without group commit.
    let mut client = beanstalk::Client::connect(bs.url()).await.expect("connect");
    client.use_tube(tubes.events()).await.expect("use");
    let n = EVENTS / 4;
    let started = Instant::now();
    for i in 0..n {
        let body = Batch::new(vec![event(i)]).encode();
        client
            .put(&body, 1024, Duration::ZERO, Duration::from_secs(120))
            .await
            .expect("put");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "one put per event, 1 caller: {n} events in {secs:.2} s = {:.0} events/s, {:.3} ms per put",
        n as f64 / secs,
        secs * 1000.0 / n as f64
    );

    for callers in [1usize, 20, 200] {
        let emitter = Emitter::new(bs.url(), &tubes);
        let per_caller = EVENTS / callers;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..callers {
            let emitter = emitter.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for i in 0..per_caller {
                    let t = Instant::now();
                    emitter
                        .emit(vec![event(c * per_caller + i)])
                        .await
                        .expect("emit");
                    latencies.push(t.elapsed());
                }
                latencies
            });
        }
        let mut latencies = Vec::new();
        while let Some(result) = tasks.join_next().await {
            latencies.extend(result.expect("caller"));
        }
        let secs = started.elapsed().as_secs_f64();
        latencies.sort();
        let events = emitter.events_put();
        let jobs = emitter.jobs_put();
        println!(
            "emitter, {callers:>3} callers: {events} events in {jobs} jobs ({:.1} events/job), \
             {:.0} events/s; emit latency p50 {:.3} ms, p99 {:.3} ms",
            events as f64 / jobs.max(1) as f64,
            events as f64 / secs,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
        );
    }
}
