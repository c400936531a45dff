//! The whole hedwig chain in one process, on loopback, for the end-to-end scenarios:
//! beanstalkd (a real process, testkit), an authoritative DNS server (testkit) publishing the
//! test domains' MX, A and DKIM TXT records, two SMTP receivers on port 25 (testkit), the
//! postoffice, the worker and mailman (each in-process, started through its library entry
//! point the way its binary does).
//!
//! Addresses: every scenario file picks its own `net` octet and gets `127.0.<net>.x`, so
//! scenarios never share a port 25 with each other (or with the worker's tests on 127.0.4.x):
//!
//! | address | what |
//! | --- | --- |
//! | `127.0.<net>.1:<free>` | mailman (SMTP) and the postoffice (HTTP) |
//! | `127.0.<net>.2:25` | `mx.rcpt.e2e.test`, MX of the recipients' domain [`RCPT_DOMAIN`] |
//! | `127.0.<net>.3:25` | `mx.sender.e2e.test`, MX of the sender's domain [`SENDER_DOMAIN`] (bounces land here) |
//! | `127.0.<net>.9` | source address of the mail clients (msmtp, swaks), named in mailman's `Received:` |
//!
//! The helpers in [`check`] take a delivered message apart and verify it; [`clients`] runs the
//! real mail clients.
#![allow(dead_code)]

pub mod check;
pub mod clients;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hedwig_message::dkim::{DkimConfig, DkimKey};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The postoffice secret the mailman's key derives from.
pub const SECRET: &str = "end-to-end-secret-0123456789abcdef0123456789abcdef";
/// The sending host (mailman's fqdn): in its `Received:` header and the postoffice's key check.
pub const MAILMAN_FQDN: &str = "web1.e2e.test";
/// The worker's EHLO name.
pub const RELAY_HOSTNAME: &str = "relay.e2e.test";
/// The sender's domain: has DKIM keys (RSA and Ed25519) and its own MX for bounces.
pub const SENDER_DOMAIN: &str = "sender.e2e.test";
/// The envelope and From: address the applications send as.
pub const SENDER: &str = "app@sender.e2e.test";
/// The recipients' domain.
pub const RCPT_DOMAIN: &str = "rcpt.e2e.test";
/// The HELO name the clients use.
pub const CLIENT_HELO: &str = "client.e2e.test";

/// How long any one stage may take before a test gives up.
pub const WAIT: Duration = Duration::from_secs(30);

/// The DKIM selectors and the fixed test keys in `message/testdata/`.
pub const DKIM_KEYS: &[(&str, &str)] = &[("rsa", "rsa2048.pem"), ("ed", "ed25519.pem")];

/// A file in the workspace's `message/testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../message/testdata")
        .join(name)
}

/// The DKIM TXT records, built from OpenSSL's view of the public keys (the `.b64` files made
/// with `openssl pkey -pubout`, see `message/testdata/README.md`), not from the signer, so a
/// wrong key in the signer cannot publish itself.
fn dkim_txt() -> Vec<(String, String)> {
    let read = |name: &str| {
        std::fs::read_to_string(testdata(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .trim()
            .to_string()
    };
    vec![
        (
            format!("rsa._domainkey.{SENDER_DOMAIN}"),
            format!("v=DKIM1; k=rsa; p={}", read("rsa2048.spki.b64")),
        ),
        (
            format!("ed._domainkey.{SENDER_DOMAIN}"),
            format!("v=DKIM1; k=ed25519; p={}", read("ed25519.raw.b64")),
        ),
    ]
}

/// The addresses of one scenario: `127.0.<net>.x`.
#[derive(Clone, Copy, Debug)]
pub struct Net(pub u8);

impl Net {
    pub fn ip(self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.0, last)
    }
    /// mailman and the postoffice.
    pub fn services(self) -> Ipv4Addr {
        self.ip(1)
    }
    /// The recipients' MX.
    pub fn rcpt_mx(self) -> Ipv4Addr {
        self.ip(2)
    }
    /// The sender's MX.
    pub fn sender_mx(self) -> Ipv4Addr {
        self.ip(3)
    }
    /// Where the mail clients connect from.
    pub fn client(self) -> Ipv4Addr {
        self.ip(9)
    }
}

/// The zone: MX + A for both domains, and the sender's DKIM keys.
pub fn zone(net: Net) -> Zone {
    zone_at(net.rcpt_mx(), net.sender_mx())
}

/// The zone of [`zone`] with the two MX hosts at `rcpt_mx` and `sender_mx`.
pub fn zone_at(rcpt_mx: Ipv4Addr, sender_mx: Ipv4Addr) -> Zone {
    let zone = Zone::new()
        .mx(RCPT_DOMAIN, 10, &format!("mx.{RCPT_DOMAIN}"))
        .a(&format!("mx.{RCPT_DOMAIN}"), &rcpt_mx.to_string())
        .mx(SENDER_DOMAIN, 10, &format!("mx.{SENDER_DOMAIN}"))
        .a(&format!("mx.{SENDER_DOMAIN}"), &sender_mx.to_string());
    dkim_txt()
        .iter()
        .fold(zone, |zone, (name, txt)| zone.txt(name, txt))
}

/// The postoffice, in-process on a fixed address so it can be stopped and started again.
pub struct Postoffice {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), postoffice::StartError>>,
}

impl Postoffice {
    pub async fn start(addr: SocketAddr, beanstalkd: &Beanstalkd) -> Postoffice {
        Self::start_with(addr, beanstalkd, |_| {}).await
    }

    /// Like [`start`](Self::start), with `change` applied to the config first.
    pub async fn start_with(
        addr: SocketAddr,
        beanstalkd: &Beanstalkd,
        change: impl FnOnce(&mut postoffice::Config),
    ) -> Postoffice {
        let mut config = postoffice::Config {
            listen: addr,
            beanstalkd: vec![beanstalkd.url()],
            secret: Some(SECRET.into()),
            startup_wait: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(2),
            // Mail is DKIM-signed only for domains the sending host is authorised for.
            default_policy: postoffice::config::HostPolicy {
                allowed_sender_domains: vec![SENDER_DOMAIN.into()],
                ..postoffice::config::HostPolicy::default()
            },
            // No ledger writer (it would write to /var/lib/hedwig); ledger tests turn it on.
            ledger: postoffice::config::LedgerConfig {
                writer: false,
                ..Default::default()
            },
            ..postoffice::Config::default()
        };
        change(&mut config);
        // The port may linger for a moment after a stop: retry the bind, bounded.
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("cannot bind the postoffice on {addr}"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(postoffice::serve(config, listener, stop.clone()));
        let http = reqwest::Client::new();
        let health = format!("http://{addr}/health");
        let mut up = false;
        for _ in 0..200 {
            let answer = http
                .get(&health)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(up, "the postoffice answers /health on {addr}");
        Postoffice { addr, stop, task }
    }

    pub fn url(addr: SocketAddr) -> String {
        format!("http://{addr}/")
    }

    /// Stops it and waits (bounded) until its listener is closed.
    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the postoffice stops within 10 s")
            .expect("the postoffice task did not panic");
        result.expect("the postoffice ran without error");
    }
}

/// The worker, in-process.
pub struct Worker {
    stop: CancellationToken,
    task: JoinHandle<Result<(), worker::RunError>>,
}

/// The worker's config: the test DNS, port 25 (the default), DKIM keys for the sender's
/// domain, short timeouts and retries.
pub fn worker_config(beanstalkd: &Beanstalkd, dns: SocketAddr) -> worker::Config {
    let t = Duration::from_secs(5);
    worker::Config {
        beanstalkd: vec![beanstalkd.url()],
        concurrency: 2,
        hostname: RELAY_HOSTNAME.into(),
        nameservers: vec![dns.to_string()],
        timeouts: worker::config::Timeouts {
            connect: t,
            greeting: t,
            helo: t,
            mail: t,
            rcpt: t,
            data_init: t,
            data_block: t,
            data_done: t,
        },
        retry: worker::config::Retry {
            first: Duration::from_secs(1),
            max_delay: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(600),
        },
        http_listen: String::new(),
        job_ttr: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        dkim: DkimConfig {
            keys: DKIM_KEYS
                .iter()
                .map(|(selector, file)| DkimKey {
                    domain: SENDER_DOMAIN.into(),
                    selector: selector.to_string(),
                    algorithm: None,
                    key_file: testdata(file),
                })
                .collect(),
            default_domain: None,
        },
        ..worker::Config::default()
    }
}

impl Worker {
    pub fn start(config: worker::Config) -> Worker {
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker::run(config, stop.clone()));
        Worker { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the worker stops within 10 s")
            .expect("the worker task did not panic");
        result.expect("the worker ran without error");
    }

    /// Stops it (as on SIGTERM: jobs in hand finish) and starts a new one with `config`.
    pub async fn restart(&mut self, config: worker::Config) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the worker stops within 10 s")
            .expect("the worker task did not panic");
        result.expect("the worker ran without error");
        *self = Worker::start(config);
    }
}

/// mailman, in-process, with its spool in a temporary directory.
pub struct Mailman {
    pub smtp: SocketAddr,
    pub spool: tempfile::TempDir,
    stop: CancellationToken,
    running: mailman::Running,
}

/// mailman's key, as `keygen web1.e2e.test` would print it.
pub fn mailman_key() -> String {
    hedwig_core::key::derive_key(SECRET, MAILMAN_FQDN)
}

impl Mailman {
    pub async fn start(net: Net, postoffice: SocketAddr) -> Mailman {
        Self::start_on(SocketAddr::from((net.services(), 0)), postoffice).await
    }

    /// mailman listening on `listen` (port 0: any free port).
    pub async fn start_on(listen: SocketAddr, postoffice: SocketAddr) -> Mailman {
        let spool = tempfile::tempdir().expect("spool dir");
        let config = mailman::Config {
            listen: vec![listen.to_string()],
            http_listen: String::new(),
            fqdn: MAILMAN_FQDN.into(),
            key: Some(mailman_key()),
            postoffice: vec![Postoffice::url(postoffice)],
            spool_dir: spool.path().to_path_buf(),
            forward_deadline: Duration::from_secs(3),
            forward_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(3),
            ..mailman::Config::default()
        };
        let settings = config.check().expect("the test config is valid");
        let stop = CancellationToken::new();
        let running = mailman::start(settings, stop.clone())
            .await
            .expect("mailman starts");
        Mailman {
            smtp: running.smtp_addrs[0],
            spool,
            stop,
            running,
        }
    }

    /// Messages in the spool (`*.msg` files).
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(self.spool.path())
            .expect("read the spool")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
            .count()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.wait())
            .await
            .expect("mailman stops within 10 s");
    }
}

/// Everything, running.
pub struct Stack {
    pub net: Net,
    pub beanstalkd: Beanstalkd,
    pub dns: DnsServer,
    /// MX of [`RCPT_DOMAIN`].
    pub rcpt_mx: SmtpReceiver,
    /// MX of [`SENDER_DOMAIN`].
    pub sender_mx: SmtpReceiver,
    /// `None` while stopped (see [`Stack::stop_postoffice`]).
    pub postoffice: Option<Postoffice>,
    pub postoffice_addr: SocketAddr,
    pub worker: Worker,
    pub mailman: Mailman,
}

impl Stack {
    /// The whole chain; the recipients' MX accepts everything.
    pub async fn start(net: Net) -> Stack {
        Self::start_with(net, Behaviour::new()).await
    }

    /// The whole chain, the recipients' MX behaving as `rcpt_mx` says.
    pub async fn start_with(net: Net, rcpt_mx: Behaviour) -> Stack {
        if std::env::var_os("RUST_LOG").is_some() {
            hedwig_service::logging::init();
        }
        let beanstalkd = Beanstalkd::start();
        let dns = DnsServer::start(zone(net)).await;
        let receiver = |ip: Ipv4Addr, hostname: &str, behaviour: Behaviour| {
            let addr = SocketAddr::from((ip, 25));
            let behaviour = behaviour.hostname(hostname);
            async move {
                SmtpReceiver::start(addr, behaviour)
                    .await
                    .unwrap_or_else(|e| panic!("SMTP receiver on {addr} (run as root): {e}"))
            }
        };
        let rcpt_mx = receiver(net.rcpt_mx(), "mx.rcpt.e2e.test", rcpt_mx).await;
        let sender_mx = receiver(net.sender_mx(), "mx.sender.e2e.test", Behaviour::new()).await;
        let postoffice_addr = SocketAddr::from((
            net.services(),
            hedwig_testkit::net::free_port(net.services()),
        ));
        let postoffice = Postoffice::start(postoffice_addr, &beanstalkd).await;
        let worker = Worker::start(worker_config(&beanstalkd, dns.addr()));
        let mailman = Mailman::start(net, postoffice_addr).await;
        Stack {
            net,
            beanstalkd,
            dns,
            rcpt_mx,
            sender_mx,
            postoffice: Some(postoffice),
            postoffice_addr,
            worker,
            mailman,
        }
    }

    /// Where the clients send to.
    pub fn mailman_addr(&self) -> SocketAddr {
        self.mailman.smtp
    }

    /// The clients' source address.
    pub fn client_ip(&self) -> IpAddr {
        IpAddr::V4(self.net.client())
    }

    pub async fn stop_postoffice(&mut self) {
        if let Some(po) = self.postoffice.take() {
            po.stop().await;
        }
    }

    /// Starts the postoffice again on the same address.
    pub async fn start_postoffice(&mut self) {
        assert!(self.postoffice.is_none(), "the postoffice already runs");
        self.postoffice = Some(Postoffice::start(self.postoffice_addr, &self.beanstalkd).await);
    }

    /// Jobs in a tube in any state: ready + delayed + reserved + buried (0 for no tube).
    pub async fn jobs_in(&self, tube: &str) -> u64 {
        let mut client = beanstalk::Client::connect(self.beanstalkd.url())
            .await
            .expect("connect to beanstalkd");
        match client.stats_tube(tube).await {
            Ok(s) => [
                "current-jobs-ready",
                "current-jobs-delayed",
                "current-jobs-reserved",
                "current-jobs-buried",
            ]
            .iter()
            .map(|k| s.get_u64(k).unwrap_or(0))
            .sum(),
            Err(_) => 0,
        }
    }

    /// Waits (bounded) until nothing is on its way any more: mailman's spool is empty and
    /// the outbound tube holds no job in any state. After this, the receivers' counts are
    /// final: no message can arrive later, so "exactly once" can be asserted.
    pub async fn wait_settled(&self, timeout: Duration) {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let spooled = self.mailman.spooled();
            let queued = self.jobs_in(hedwig_queue::tubes::TUBE_OUTBOUND).await;
            if spooled == 0 && queued == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "not settled after {timeout:?}: {spooled} spooled, {queued} queued"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every component in order, each within a bounded time, and checks each ran
    /// without error.
    pub async fn stop(mut self) {
        self.mailman.stop().await;
        if let Some(po) = self.postoffice.take() {
            po.stop().await;
        }
        self.worker.stop().await;
    }
}
