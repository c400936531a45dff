//! Shared set-up for the worker's integration tests: a config pointed at the test servers,
//! an in-process worker, and queue helpers. Every test file uses its own 127.0.4.x addresses
//! so that tests running at the same time never share an SMTP port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use beanstalk::Client;
use hedwig_core::address::Recipient;
use hedwig_queue::job::{Envelope, Job};
use hedwig_queue::tubes::{TUBE_FAILED, TUBE_OUTBOUND};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use tokio_util::sync::CancellationToken;
use worker::Config;

/// A config for tests: short timeouts, retries in seconds, DNS at `dns`, no HTTP port.
pub fn config(beanstalkd: &str, dns: SocketAddr) -> Config {
    let s = Duration::from_secs(3);
    Config {
        beanstalkd: vec![beanstalkd.to_string()],
        concurrency: 2,
        hostname: "relay.hedwig.test".into(),
        nameservers: vec![dns.to_string()],
        ipv6: true,
        timeouts: worker::config::Timeouts {
            connect: s,
            greeting: s,
            helo: s,
            mail: s,
            rcpt: s,
            data_init: s,
            data_block: s,
            data_done: s,
        },
        retry: worker::config::Retry {
            first: Duration::from_secs(1),
            max_delay: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(3600),
        },
        http_listen: String::new(),
        job_ttr: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

/// A worker running in this process until the handle is dropped or stopped.
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<Result<(), worker::RunError>>>,
}

impl Running {
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("worker stops within 10s")
            .expect("worker task did not panic");
        result.expect("worker ran without error");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn start(config: Config) -> Running {
    if std::env::var_os("RUST_LOG").is_some() {
        hedwig_service::logging::init();
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker::run(config, shutdown.clone()));
    Running {
        shutdown,
        task: Some(task),
    }
}

pub fn job(from: &str, rcpts: &[&str], message: &[u8]) -> Job {
    let envelope = Envelope::new(
        hedwig_core::new_queue_id(),
        "web1.example.test".into(),
        from.into(),
        rcpts.iter().map(|&r| r.into()).collect(),
    );
    Job {
        envelope,
        message: message.to_vec(),
    }
}

/// Puts `job` into the outbound tube.
pub async fn enqueue(beanstalkd: &str, job: &Job) {
    let mut c = Client::connect(beanstalkd).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    c.put(&job.encode(), 1024, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Reserves (and deletes) the next failed-tube record, waiting up to `wait`.
pub async fn next_failed(beanstalkd: &str, wait: Duration) -> Option<Job> {
    let mut c = Client::connect(beanstalkd).await.unwrap();
    c.watch(TUBE_FAILED).await.unwrap();
    c.ignore("default").await.unwrap();
    let job = c.reserve_with_timeout(wait).await.ok()?;
    c.delete(job.id).await.unwrap();
    Some(Job::decode(&job.body).unwrap())
}

/// Jobs in a tube: (ready, delayed, reserved, buried); zeros for a tube that does not exist.
pub async fn tube_counts(beanstalkd: &str, tube: &str) -> (u64, u64, u64, u64) {
    let mut c = Client::connect(beanstalkd).await.unwrap();
    match c.stats_tube(tube).await {
        Ok(s) => (
            s.get_u64("current-jobs-ready").unwrap_or(0),
            s.get_u64("current-jobs-delayed").unwrap_or(0),
            s.get_u64("current-jobs-reserved").unwrap_or(0),
            s.get_u64("current-jobs-buried").unwrap_or(0),
        ),
        Err(_) => (0, 0, 0, 0),
    }
}

/// Waits (bounded) until `tube` has no job in any state.
pub async fn wait_tube_empty(beanstalkd: &str, tube: &str, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if tube_counts(beanstalkd, tube).await == (0, 0, 0, 0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// An SMTP receiver on `ip`:25.
pub async fn mx(ip: &str, behaviour: Behaviour) -> SmtpReceiver {
    SmtpReceiver::start(format!("{ip}:25").parse().unwrap(), behaviour)
        .await
        .unwrap()
}

/// A 4 KB-ish message with 8-bit content, a leading-dot line and CRLFs.
pub fn message(subject: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <sender@sender.test>\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@sender.test>\r\nDate: Mon, 23 Nov 2026 04:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(b".leading dot\r\ncaf\xc3\xa9\r\n");
    for i in 0..60 {
        m.extend_from_slice(
            format!("line {i:03} of the body, some text to fill it up\r\n").as_bytes(),
        );
    }
    m
}

/// The delivery engine alone (no queue), built from `config`.
pub fn deliverer(config: Config) -> std::sync::Arc<worker::deliver::Deliverer> {
    worker::build(config).unwrap().worker.deliverer.clone()
}

/// Delivers to one domain and returns the outcomes by recipient.
pub async fn deliver(
    d: &worker::deliver::Deliverer,
    domain: &str,
    rcpts: &[&str],
) -> Vec<(Recipient, worker::plan::Outcome)> {
    let rcpts: Vec<Recipient> = rcpts.iter().map(|&r| r.into()).collect();
    d.deliver_domain(
        "web1.test",
        domain,
        "sender@sender.test",
        "sender@sender.test",
        &rcpts,
        &message("direct"),
    )
    .await
}
