//! End-to-end throughput: beanstalkd → worker (in this process) → Postfix's `smtp-sink` on
//! 127.0.4.200:25, 4 KB messages, with and without DKIM rsa-2048.
//!
//! Not a timed test: it prints messages per second, the worker's CPU time per message
//! (user + system of this process, from /proc/self/stat) and the share of it spent in DKIM
//! signing (measured separately on the same message). beanstalkd's and smtp-sink's own CPU
//! is not included.
//!
//! `cargo bench -p worker --bench e2e` — knobs: `BENCH_MESSAGES` (default 20000),
//! `BENCH_CONCURRENCY` (default 64).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beanstalk::Client;
use hedwig_message::dkim::{generate, Algorithm, DkimConfig, DkimKey, Signer};
use hedwig_queue::job::{Envelope, Job};
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;
use worker::Config;

const SINK: &str = "127.0.4.200:25";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // fields[0] is field 3 (state); utime = field 14 → index 11.
    (ticks(11) + ticks(12)) / 100.0
}

fn message() -> Vec<u8> {
    let mut m = b"From: App <app@bench.example>\r\nTo: user@bench.test\r\nSubject: benchmark\r\n\
Date: Mon, 23 Nov 2026 04:00:00 +0000\r\nMessage-ID: <bench@bench.example>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    while m.len() < 4096 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m
}

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink() -> Sink {
    let child = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "nobody", SINK, "1024"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (Debian package postfix) is installed");
    std::thread::sleep(Duration::from_millis(300));
    Sink(child)
}

async fn fill(url: &str, n: usize, body: &[u8]) {
    let mut c = Client::connect(url).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    for i in 0..n {
        let mut envelope = Envelope::new(
            format!("BENCH{i:08}"),
            "web1.bench.example".into(),
            "app@bench.example".into(),
            vec![format!("user{i}@bench.test").into()],
        );
        // As the post office writes it for a host allowed bench.example.
        envelope.dkim_domains = Some(vec!["bench.example".into()]);
        let job = Job {
            envelope,
            message: body.to_vec(),
        };
        c.put(
            &job.encode(),
            1024,
            Duration::ZERO,
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    }
}

async fn ready(url: &str) -> u64 {
    let mut c = Client::connect(url).await.unwrap();
    let s = c.stats_tube(TUBE_OUTBOUND).await.unwrap();
    s.get_u64("current-jobs-ready").unwrap_or(0) + s.get_u64("current-jobs-reserved").unwrap_or(0)
}

async fn run(label: &str, dkim: Option<DkimConfig>, n: usize, concurrency: usize) -> f64 {
    let bs = Beanstalkd::start();
    let body = message();
    fill(&bs.url(), n, &body).await;
    let mut config = Config {
        beanstalkd: vec![bs.url()],
        concurrency,
        hostname: "relay.bench.example".into(),
        http_listen: String::new(),
        ..Config::default()
    };
    config.transports.insert(
        "bench.test".into(),
        format!("[{}]", SINK.trim_end_matches(":25")),
    );
    if let Some(d) = dkim {
        config.dkim = d;
    }
    let shutdown = CancellationToken::new();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let task = tokio::spawn(worker::run(config, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while ready(&bs.url()).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    shutdown.cancel();
    let _ = task.await;
    let rate = n as f64 / wall;
    println!(
        "{label:>14}: {n} messages in {wall:.2}s = {rate:.0} msg/s; worker CPU {:.0} µs/message",
        cpu / n as f64 * 1e6
    );
    cpu / n as f64
}

fn main() {
    let n = env_usize("BENCH_MESSAGES", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _sink = start_sink();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("rsa.pem");
    std::fs::write(&key_file, generate(Algorithm::Rsa).unwrap().private_pem).unwrap();
    let dkim = DkimConfig {
        keys: vec![DkimKey {
            domain: "bench.example".into(),
            selector: "bench".into(),
            algorithm: Some(Algorithm::Rsa),
            key_file,
        }],
        default_domain: None,
    };

    // DKIM cost alone, single-threaded, on the same message.
    let signer = Arc::new(Signer::new(&dkim).unwrap());
    let body = message();
    let rounds = 2000;
    let t = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(signer.sign_message(&body, 1_800_000_000 + i).unwrap());
    }
    let sign = t.elapsed().as_secs_f64() / rounds as f64;
    println!("DKIM rsa-2048 sign of a 4 KB message: {:.0} µs", sign * 1e6);

    println!("concurrency {concurrency}, 4 KB messages, smtp-sink at {SINK}");
    rt.block_on(run("without DKIM", None, n, concurrency));
    let per = rt.block_on(run("DKIM rsa-2048", Some(dkim), n, concurrency));
    println!(
        "DKIM share of worker CPU per message: {:.0}%",
        sign / per * 100.0
    );
}
