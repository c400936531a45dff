//! The real thing for end-to-end tests: beanstalkd (testkit), the postoffice in-process, and
//! reading jobs back from the `hedwig` tube.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hedwig_queue::job::Job;
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "an-end-to-end-test-secret-of-enough-length-0123456789";
pub const FQDN: &str = "mailman.test";

pub fn key() -> String {
    hedwig_core::key::derive_key(SECRET, FQDN)
}

/// A postoffice running in this process.
pub struct Postoffice {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Postoffice {
    pub async fn start(beanstalkd: &Beanstalkd) -> Postoffice {
        Self::start_on(beanstalkd, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(beanstalkd: &Beanstalkd, addr: SocketAddr) -> Postoffice {
        Self::start_with(beanstalkd, addr, |_| {}).await
    }

    /// Starts on `addr` with the test config changed by `tweak`.
    pub async fn start_with(
        beanstalkd: &Beanstalkd,
        addr: SocketAddr,
        tweak: impl FnOnce(&mut postoffice::Config),
    ) -> Postoffice {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = postoffice::Config {
            listen: addr,
            beanstalkd: vec![beanstalkd.url()],
            secret: Some(SECRET.into()),
            shutdown_timeout: Duration::from_secs(2),
            // No ledger writer (it would write to /var/lib/hedwig); ledger tests turn it on.
            ledger: postoffice::config::LedgerConfig {
                writer: false,
                ..Default::default()
            },
            ..postoffice::Config::default()
        };
        tweak(&mut config);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            postoffice::serve(config, listener, s)
                .await
                .expect("postoffice runs");
        });
        // wait until it answers
        let url = format!("http://{addr}/health");
        for _ in 0..100 {
            if reqwest::get(&url).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Postoffice { addr, stop, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Reserves and deletes every job in the outbound tube until none comes for `quiet`.
pub async fn take_jobs(beanstalkd: &Beanstalkd, quiet: Duration) -> Vec<Job> {
    let mut client = beanstalk::Client::connect(beanstalkd.url()).await.unwrap();
    client
        .watch(hedwig_queue::tubes::TUBE_OUTBOUND)
        .await
        .unwrap();
    client.ignore("default").await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..10_000 {
        match client.reserve_with_timeout(quiet).await {
            Ok(job) => {
                jobs.push(Job::decode(&job.body).expect("a valid job"));
                client.delete(job.id).await.unwrap();
            }
            Err(_) => break,
        }
    }
    jobs
}

/// Splits a message into its first header (mailman's `Received:`, folded lines included) and
/// the rest.
pub fn split_received(message: &[u8]) -> (String, Vec<u8>) {
    let mut i = 0;
    while let Some(pos) = message[i..].windows(2).position(|w| w == b"\r\n") {
        let end = i + pos + 2;
        match message.get(end) {
            Some(b'\t') | Some(b' ') => i = end,
            _ => {
                return (
                    String::from_utf8_lossy(&message[..end]).into_owned(),
                    message[end..].to_vec(),
                )
            }
        }
    }
    (String::new(), message.to_vec())
}
