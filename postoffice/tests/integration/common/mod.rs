//! A real beanstalkd and a post office serving on a free loopback port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hedwig_queue::job::Job;
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const HOST: &str = "web1.example.com";

pub struct PostOffice {
    pub beanstalkd: Beanstalkd,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), postoffice::StartError>>,
    pub http: reqwest::Client,
}

pub fn config(beanstalkd: &Beanstalkd) -> postoffice::Config {
    postoffice::Config {
        beanstalkd: vec![beanstalkd.url()],
        secret: Some(SECRET.into()),
        startup_wait: Duration::from_secs(2),
        // No ledger writer (it would write to /var/lib/hedwig); ledger tests turn it on.
        ledger: postoffice::config::LedgerConfig {
            writer: false,
            ..Default::default()
        },
        ..postoffice::Config::default()
    }
}

impl PostOffice {
    pub async fn start() -> PostOffice {
        let beanstalkd = Beanstalkd::start();
        let config = config(&beanstalkd);
        PostOffice::start_with(beanstalkd, config).await
    }

    pub async fn start_with(beanstalkd: Beanstalkd, config: postoffice::Config) -> PostOffice {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(postoffice::serve(config, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        PostOffice {
            beanstalkd,
            addr,
            shutdown,
            task,
            http,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub async fn post_form(&self, fields: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(self.url())
            .form(fields)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Posts a message from HOST with its real key.
    pub async fn send(&self, email: serde_json::Value) -> (u16, serde_json::Value) {
        let key = hedwig_core::key::derive_key(SECRET, HOST);
        let email = email.to_string();
        self.post_form(&[("fqdn", HOST), ("key", &key), ("email", &email)])
            .await
    }

    /// Every job now in the outbound tube (reserved, then released untouched).
    pub async fn jobs(&self) -> Vec<Job> {
        let mut client = beanstalk::Client::connect(self.beanstalkd.url())
            .await
            .unwrap();
        client
            .watch(hedwig_queue::tubes::TUBE_OUTBOUND)
            .await
            .unwrap();
        client.ignore("default").await.unwrap();
        let mut jobs = Vec::new();
        let mut ids = Vec::new();
        while let Ok(job) = client.reserve_with_timeout(Duration::ZERO).await {
            jobs.push(Job::decode(&job.body).unwrap());
            ids.push(job.id);
        }
        for id in ids {
            client.release(id, 0, Duration::ZERO).await.unwrap();
        }
        jobs
    }

    pub async fn ready_count(&self) -> u64 {
        let mut client = beanstalk::Client::connect(self.beanstalkd.url())
            .await
            .unwrap();
        match client.stats_tube(hedwig_queue::tubes::TUBE_OUTBOUND).await {
            Ok(stats) => stats.current_jobs_ready().unwrap_or(0),
            Err(beanstalk::Error::NotFound) => 0,
            Err(e) => panic!("{e}"),
        }
    }
}

pub fn email(to: &[&str], data: &str) -> serde_json::Value {
    serde_json::json!({"mailfrom": "app@example.com", "rcpttos": to, "data": data})
}

/// A failed record as the worker writes it.
pub fn failed_record(
    queue_id: &str,
    host: &str,
    rcpts: &[&str],
    code: u16,
    dsn: &str,
    at: u64,
) -> Job {
    use hedwig_queue::job::{Attempt, Envelope, Failure};
    let mut envelope = Envelope::new(
        queue_id.into(),
        host.into(),
        "app@example.com".into(),
        rcpts.iter().map(|&s| s.into()).collect(),
    );
    // Fixed, not the clock's: two records built a second apart must compare equal.
    envelope.received_at = at.saturating_sub(60);
    envelope.history.push(Attempt {
        at,
        recipients: envelope.rcpt_to.iter().map(|r| r.to_string()).collect(),
        status: "bounced".into(),
        code: Some(code),
        dsn: Some(dsn.into()),
        response: format!("{code} {dsn} rejected by policy"),
        relay: Some("mx.example.org[127.0.0.9]:25".into()),
    });
    envelope.failure = Some(Failure {
        at,
        reason: "rejected".into(),
        code: Some(code),
        dsn: Some(dsn.into()),
        response: format!("{code} {dsn} rejected by policy"),
        relay: Some("mx.example.org[127.0.0.9]:25".into()),
    });
    Job {
        envelope,
        message: format!(
            "Subject: test {queue_id}\r\nFrom: app@example.com\r\n\r\nbody of {queue_id}\r\n"
        )
        .into_bytes(),
    }
}

/// Puts `job` into `tube` on the beanstalkd at `url`.
pub async fn put(url: &str, tube: &str, job: &Job) -> u64 {
    let mut client = beanstalk::Client::connect(url.to_owned()).await.unwrap();
    client.use_tube(tube).await.unwrap();
    client
        .put(
            &job.encode(),
            1024,
            Duration::ZERO,
            Duration::from_secs(600),
        )
        .await
        .unwrap()
}

/// Every job now ready in `tube` (reserved, then released untouched), sorted by queue id.
pub async fn jobs_in(url: &str, tube: &str) -> Vec<Job> {
    let mut client = beanstalk::Client::connect(url.to_owned()).await.unwrap();
    client.watch(tube).await.unwrap();
    client.ignore("default").await.unwrap();
    let mut jobs = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..10_000 {
        match client.reserve_with_timeout(Duration::ZERO).await {
            Ok(job) => {
                jobs.push(Job::decode(&job.body).unwrap());
                ids.push(job.id);
            }
            Err(beanstalk::Error::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    for id in ids {
        client.release(id, 0, Duration::ZERO).await.unwrap();
    }
    jobs.sort_by(|a, b| a.envelope.queue_id.cmp(&b.envelope.queue_id));
    jobs
}

/// Runs the real `postoffice` binary; returns (exit success, stdout, stderr).
pub fn admin(args: &[&str]) -> (bool, String, String) {
    admin_env(args, None)
}

/// [`admin`] with `HEDWIG_BEANSTALKD` set to `beanstalkd`.
pub fn admin_env(args: &[&str], beanstalkd: Option<&str>) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"));
    command
        .env_remove("HEDWIG_BEANSTALKD")
        .env("HEDWIG_LEDGER__WRITER", "false");
    if let Some(servers) = beanstalkd {
        command.env("HEDWIG_BEANSTALKD", servers);
    }
    let out = command
        .args(args)
        .env_remove("HEDWIG_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
