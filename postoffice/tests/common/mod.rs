//! A real beanstalkd and a post office serving on a free loopback port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hedwig_core::job::Job;
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
        beanstalkd: beanstalkd.url(),
        secret: Some(SECRET.into()),
        startup_wait: Duration::from_secs(2),
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
        client.watch(hedwig_core::TUBE_OUTBOUND).await.unwrap();
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
        match client.stats_tube(hedwig_core::TUBE_OUTBOUND).await {
            Ok(stats) => stats.current_jobs_ready().unwrap_or(0),
            Err(beanstalk::Error::NotFound) => 0,
            Err(e) => panic!("{e}"),
        }
    }
}

pub fn email(to: &[&str], data: &str) -> serde_json::Value {
    serde_json::json!({"mailfrom": "app@example.com", "rcpttos": to, "data": data})
}
