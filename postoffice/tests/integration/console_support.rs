//! A post office with the console on (real beanstalkd, SQLite ledger, the ledger writer),
//! events put into the events tube as the post office and workers put them, and HTTP
//! clients with a cookie jar. Shared by the console's HTTP and browser tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hedwig_queue::event::{new_event_id, Batch, Event, Outcome, Queued, RecipientEvent, What};
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

use crate::common::SECRET;

pub const TOKEN: &str = "console-test-token-0123456789";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";

pub fn now() -> u64 {
    hedwig_queue::event::now_millis()
}

/// A `queued` event.
pub fn queued(
    queue_id: &str,
    at: u64,
    host: &str,
    sender: &str,
    rcpts: &[&str],
    subject: &str,
) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Queued(Queued {
            host: host.into(),
            sender: sender.into(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            size: 321,
            message_kind: "message".into(),
            edge_id: None,
            edge_client: None,
            post_client: None,
            message_id: Some(format!("{queue_id}@example.com")),
            subject: Some(subject.into()),
            bounce_of: None,
            expires_at: None,
            held: false,
            app: None,
            lane: None,
            fixups: Vec::new(),
        }),
    }
}

/// A delivery attempt's outcome with a remote reply.
pub fn attempt(
    queue_id: &str,
    at: u64,
    rcpt: &str,
    outcome: Outcome,
    code: u16,
    reply: &str,
) -> Event {
    Event {
        id: new_event_id(),
        at,
        queue_id: queue_id.into(),
        what: What::Recipient(RecipientEvent {
            recipient: rcpt.into(),
            outcome,
            mx: Some("mx.example.org".into()),
            ip: Some("127.0.150.99".into()),
            tls: Some(true),
            code: Some(code),
            dsn: None,
            reply: reply.into(),
            attempt: Some(1),
            by: None,
            list_id: None,
            source_ip: None,
            pool: None,
            sender_domain: None,
        }),
    }
}

pub struct Console {
    pub beanstalkd: Beanstalkd,
    pub api: SocketAddr,
    pub base: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), postoffice::StartError>>,
    pub dir: tempfile::TempDir,
}

impl Console {
    /// Starts one on `ip` (the admin listener, beanstalkd and intake all there).
    pub async fn start(ip: Ipv4Addr, tweak: impl FnOnce(&mut postoffice::Config)) -> Console {
        let beanstalkd = Beanstalkd::start_on(ip);
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let api = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
        let mut config = postoffice::Config {
            beanstalkd: vec![beanstalkd.url()],
            secret: Some(SECRET.into()),
            startup_wait: Duration::from_secs(2),
            data_dir: dir.path().to_path_buf(),
            ..postoffice::Config::default()
        };
        config.ledger.url = Some(format!("sqlite://{}/ledger.db", dir.path().display()));
        config.ledger.writer = true;
        config.ledger.check_interval = Duration::from_millis(200);
        config.ledger.api_listen = Some(api);
        config.ledger.api_token_file = Some(token_file);
        config.console.enabled = true;
        config.console.users = vec![postoffice::console::ConsoleUser {
            name: USER.into(),
            password_hash: postoffice::console::auth::hash_password(PASSWORD).unwrap(),
        }];
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(postoffice::serve(config, listener, shutdown.clone()));
        let console = Console {
            beanstalkd,
            api,
            base: format!("http://{api}"),
            shutdown,
            task,
            dir,
        };
        let http = reqwest::Client::new();
        let up = until(Duration::from_secs(10), || async {
            http.get(format!("{}/console/login", console.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "the console came up");
        console
    }

    /// A client with a cookie jar, from source address `from`, not following redirects.
    pub fn client(&self, from: Ipv4Addr) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .local_address(IpAddr::V4(from))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Logs `client` in as a browser does (the login page first: its form's CSRF token and
    /// cookie); the answer.
    pub async fn login(
        &self,
        client: &reqwest::Client,
        user: &str,
        password: &str,
    ) -> reqwest::Response {
        let (status, page) = self.get(client, "/console/login").await;
        assert_eq!(status, 200, "{page}");
        let csrf = Console::csrf(&page);
        client
            .post(format!("{}/console/login", self.base))
            .form(&[("user", user), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    }

    /// GET a console path: status and body.
    pub async fn get(&self, client: &reqwest::Client, path: &str) -> (u16, String) {
        let r = client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The CSRF token in a page's forms.
    pub fn csrf(page: &str) -> String {
        let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field");
        let rest = &page[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    /// Puts `events` into the events tube and waits until the ledger has `queue_id`.
    pub async fn record(&self, events: Vec<Event>, queue_id: &str) {
        let mut c = beanstalk::Client::connect(self.beanstalkd.url())
            .await
            .unwrap();
        c.use_tube("hedwig-events").await.unwrap();
        c.put(
            &Batch::new(events).encode(),
            1024,
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/messages/{queue_id}", self.base);
        let stored = until(Duration::from_secs(10), || async {
            http.get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(stored, "the writer stored {queue_id}");
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A sending domain's records in an in-process DNS server, and a worker config naming its
/// DKIM key, for the DNS page: MX, SPF, DKIM and PTR are right, DMARC is missing until
/// [`DnsFixture::publish_dmarc`].
pub struct DnsFixture {
    pub dns: hedwig_testkit::dns::DnsServer,
    zone: hedwig_testkit::dns::Zone,
    _dir: tempfile::TempDir,
    worker_config: std::path::PathBuf,
}

impl DnsFixture {
    pub async fn start(ip: Ipv4Addr) -> DnsFixture {
        use hedwig_testkit::dns::{DnsServer, Zone};
        let dir = tempfile::tempdir().unwrap();
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../message/testdata");
        let spki = std::fs::read_to_string(testdata.join("rsa2048.spki.b64")).unwrap();
        let zone = Zone::new()
            .mx("send.example.test", 10, "mx.send.example.test")
            .a("mx.send.example.test", "192.0.2.10")
            .txt("send.example.test", "v=spf1 ip4:192.0.2.25 -all")
            .txt(
                "sel._domainkey.send.example.test",
                &format!("v=DKIM1; k=rsa; p={}", spki.trim()),
            )
            .ptr("192.0.2.25", "relay.example.test")
            .a("relay.example.test", "192.0.2.25");
        let addr = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
        let dns = DnsServer::start_on(addr, zone.clone()).await.unwrap();
        let worker_config = dir.path().join("worker.yaml");
        std::fs::write(
            &worker_config,
            format!(
                "hostname: relay.example.test\nnameservers: [\"{addr}\"]\ndkim:\n  keys:\n  - domain: send.example.test\n    selector: sel\n    key_file: {}\n",
                testdata.join("rsa2048.pem").display()
            ),
        )
        .unwrap();
        DnsFixture {
            dns,
            zone,
            _dir: dir,
            worker_config,
        }
    }

    /// `console.dns` for it.
    pub fn config(&self) -> postoffice::console::pages::dns::DnsConfig {
        postoffice::console::pages::dns::DnsConfig {
            sending_ip: "192.0.2.25".parse().unwrap(),
            worker_config: self.worker_config.clone(),
            domains: vec![],
            ehlo: None,
            nameservers: vec![],
            cache: Duration::from_secs(300),
        }
    }

    pub fn publish_dmarc(&self) {
        self.dns.set(
            self.zone
                .clone()
                .txt("_dmarc.send.example.test", "v=DMARC1; p=none"),
        );
    }
}
