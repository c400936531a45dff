//! Intake benchmark: requests/s and latency of `postoffice` (release binary, its own process)
//! queuing into a real beanstalkd (binlog on) on this machine.
//!
//! Run with `scripts/bench-postoffice` (builds release first). Prints, per message size, the
//! closed-loop throughput with 64 concurrent clients and p50/p99 latency, then the latency of
//! an open-loop load of 1,000 requests/s. Bounded: a fixed number of requests per run.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret-0123456789abcdef0123";
const HOST: &str = "bench.example.com";

fn message(size: usize) -> String {
    let mut m =
        String::from("From: app@example.com\r\nTo: u@example.org\r\nSubject: bench\r\n\r\n");
    while m.len() < size {
        m.push_str("The quick brown fox jumps over the lazy dog, again and again and again.\r\n");
    }
    m.truncate(size);
    m
}

fn form(size: usize) -> String {
    let email = serde_json::json!({
        "mailfrom": "app@example.com", "rcpttos": ["u@example.org"], "data": message(size)
    });
    let key = hedwig_core::key::derive_key(SECRET, HOST);
    serde_urlencoded::to_string([
        ("fqdn", HOST),
        ("key", key.as_str()),
        ("email", &email.to_string()),
    ])
    .expect("form")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn closed_loop(url: &str, body: Arc<String>, total: usize, concurrency: usize) {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, body, next, url) =
            (client.clone(), body.clone(), next.clone(), url.to_string());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.as_bytes().to_vec())
                    .send()
                    .await
                    .expect("post");
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await;
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.expect("task"));
    }
    let elapsed = started.elapsed();
    lat.sort();
    println!(
        "  closed loop, {concurrency} clients, {total} requests: {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        total as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

async fn open_loop(url: &str, body: Arc<String>, rate: u32, seconds: u32) {
    let client = reqwest::Client::new();
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (client, body, url) = (client.clone(), body.clone(), url.to_string());
        tasks.spawn(async move {
            let t = Instant::now();
            let resp = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.as_bytes().to_vec())
                .send()
                .await
                .expect("post");
            assert_eq!(resp.status(), 200);
            let _ = resp.bytes().await;
            t.elapsed()
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.push(r.expect("task"));
    }
    lat.sort();
    println!(
        "  open loop, {rate} req/s for {seconds}s:             p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let binary =
        std::env::var("POSTOFFICE_BIN").unwrap_or_else(|_| "target/release/postoffice".into());
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let listen = hedwig_testkit::net::free_addr();
    let mut server = Command::new(&binary)
        .env("HEDWIG_LISTEN", listen.to_string())
        .env("HEDWIG_BEANSTALKD", beanstalkd.url())
        .env("HEDWIG_SECRET", SECRET)
        // Unsigned bodies (key in the body): the whole request limit, as before signed requests.
        .env("HEDWIG_MAX_UNAUTHENTICATED_REQUESTS", "1024")
        .env("HEDWIG_UNAUTHENTICATED_BYTES_IN_FLIGHT", "512MB")
        // One host sends everything: no per-host rate limit (the default is 600 recipients a minute).
        .env("HEDWIG_DEFAULT_POLICY__RATE_PER_MINUTE", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e} (cargo build --release -p postoffice)"));
    let url = format!("http://{listen}/");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{url}health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "postoffice intake benchmark ({} cores; beanstalkd with binlog on this machine)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (size, total) in [(4 * 1024, 30_000), (100 * 1024, 3_000)] {
        let body = Arc::new(form(size));
        println!(
            "{} KB messages ({} byte request bodies):",
            size / 1024,
            body.len()
        );
        closed_loop(&url, body.clone(), total / 10, 64).await; // warm-up
        closed_loop(&url, body.clone(), total, 64).await;
        open_loop(&url, body, 1000, 5).await;
    }
    let _ = server.kill();
    let _ = server.wait();
}
