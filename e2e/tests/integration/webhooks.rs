//! Signed webhooks through the whole chain (issue 14): a raw SMTP client -> mailman -> the
//! post office (ledger writer on SQLite, webhooks dispatcher) -> beanstalkd -> the worker ->
//! a scripted MX (250 / 451 / 550 5.1.1), and the events POSTed to real HTTP receivers
//! (`e2e/webhooks/receiver.py`, Python 3) that check every `Hedwig-Signature` with Python's
//! own `hmac` and log what they got.
//!
//! Scenarios: the right events for 250, 451-then-250 and 550 reach an endpoint, filtered
//! endpoints get only theirs, and an endpoint that hangs does not hold up the other; a
//! receiver down for two minutes then back gets every event exactly once per event id; a
//! receiver answering 500 then 200 gets the same event id and body again; an endpoint that
//! never answers 2xx is marked failed after `max_age`, visible and retried through the admin
//! API.
//!
//! Addresses: 127.0.150.x only; each test has its own block of octets (`base`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use postoffice::webhooks::WebhookConfig;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{
    worker_config, Mailman, Net, Postoffice, Worker, RCPT_DOMAIN, SENDER, SENDER_DOMAIN,
};

const NET: Net = Net(150);
const SECRET: &str = "whsec-e2e-0123456789abcdef0123456789";
const TOKEN: &str = "e2e-webhooks-token-0123456789abcdef";
const OK: &str = "ok@rcpt.e2e.test";
const LATER: &str = "later@rcpt.e2e.test";
const NOBODY: &str = "nobody@rcpt.e2e.test";
const BUSY: &str = "451 4.2.1 mailbox busy, try again later";
const UNKNOWN: &str = "550 5.1.1 <nobody@rcpt.e2e.test>: no such user here";

fn ip(last: u8) -> Ipv4Addr {
    NET.ip(last)
}

/// The Python receiver, a real process; killed on drop.
struct Receiver {
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    mode: String,
    secret_file: PathBuf,
}

impl Receiver {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks/receiver.py")
    }

    /// A receiver for `addr` (not started yet), logging into `dir`.
    fn new(dir: &Path, name: &str, addr: SocketAddr, mode: &str) -> Receiver {
        let secret_file = dir.join(format!("{name}.secret"));
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        Receiver {
            addr,
            log: dir.join(format!("{name}.jsonl")),
            child: None,
            mode: mode.into(),
            secret_file,
        }
    }

    /// Starts it and waits (bounded) until it accepts connections.
    async fn start(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("python3")
            .arg(Self::script())
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--secret-file")
            .arg(&self.secret_file)
            .arg("--log")
            .arg(&self.log)
            .arg("--mode")
            .arg(&self.mode)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs (Debian's python3 package)");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the webhook receiver does not listen on {}", self.addr);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every request it logged, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The requests it answered 2xx.
    fn accepted(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
            })
            .collect()
    }

    fn endpoint(&self, name: &str, events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: format!("http://{}/hooks", self.addr),
            secret_file: Some(self.secret_file.clone()),
            secret_env: None,
            events: events.iter().map(|e| e.to_string()).collect(),
            hosts: Vec::new(),
            sender_domains: Vec::new(),
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
            concurrency: 4,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The chain for one test, on `127.0.150.<base + k>`: services at +1, the recipients' MX
/// at +2, the sender's MX at +3, beanstalkd at +4, DNS at +5, receivers from +6, the SMTP
/// client at +9.
struct Chain {
    base: u8,
    beanstalkd: Beanstalkd,
    _dns: DnsServer,
    rcpt_mx: SmtpReceiver,
    _sender_mx: SmtpReceiver,
    postoffice: Postoffice,
    worker: Worker,
    mailman: Mailman,
    api: String,
    _data: tempfile::TempDir,
}

impl Chain {
    async fn start(base: u8, rcpt: Behaviour, webhooks: Vec<WebhookConfig>) -> Chain {
        if std::env::var_os("RUST_LOG").is_some() {
            hedwig_service::logging::init();
        }
        let beanstalkd = Beanstalkd::start_on(ip(base + 4));
        // Both domains' MX on this test's addresses (no DKIM records: nothing here checks
        // signatures of the mail).
        let zone = Zone::new()
            .mx(RCPT_DOMAIN, 10, &format!("mx.{RCPT_DOMAIN}"))
            .a(&format!("mx.{RCPT_DOMAIN}"), &ip(base + 2).to_string())
            .mx(SENDER_DOMAIN, 10, &format!("mx.{SENDER_DOMAIN}"))
            .a(&format!("mx.{SENDER_DOMAIN}"), &ip(base + 3).to_string());
        let mut dns = None;
        for _ in 0..20 {
            let port = hedwig_testkit::net::free_port(ip(base + 5));
            if let Ok(d) =
                DnsServer::start_on(SocketAddr::from((ip(base + 5), port)), zone.clone()).await
            {
                dns = Some(d);
                break;
            }
        }
        let dns = dns.expect("the test DNS server starts");
        let rcpt_mx = SmtpReceiver::start(
            SocketAddr::from((ip(base + 2), 25)),
            rcpt.hostname("mx.rcpt.e2e.test"),
        )
        .await
        .expect("SMTP receiver on port 25 (run as root)");
        let sender_mx = SmtpReceiver::start(
            SocketAddr::from((ip(base + 3), 25)),
            Behaviour::new().hostname("mx.sender.e2e.test"),
        )
        .await
        .expect("SMTP receiver on port 25");
        let data = tempfile::tempdir().unwrap();
        let token_file = data.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let services = ip(base + 1);
        let po_addr = SocketAddr::from((services, hedwig_testkit::net::free_port(services)));
        let api_addr = SocketAddr::from((services, hedwig_testkit::net::free_port(services)));
        let dir = data.path().to_path_buf();
        let postoffice = Postoffice::start_with(po_addr, &beanstalkd, |c| {
            c.data_dir = dir;
            c.ledger.writer = true;
            c.ledger.api_listen = Some(api_addr);
            c.ledger.api_token_file = Some(token_file);
            c.webhooks = webhooks;
        })
        .await;
        let worker = Worker::start(worker_config(&beanstalkd, dns.addr()));
        let mailman = Mailman::start_on(SocketAddr::from((services, 0)), po_addr).await;
        Chain {
            base,
            beanstalkd,
            _dns: dns,
            rcpt_mx,
            _sender_mx: sender_mx,
            postoffice,
            worker,
            mailman,
            api: format!("http://{api_addr}"),
            _data: data,
        }
    }

    /// Sends one message to each of `to` over one SMTP session; the Message-IDs are
    /// `<tag-i@sender.e2e.test>`.
    async fn send(&self, tag: &str, to: &[&str]) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip(self.base + 9)), 0))
            .unwrap();
        let stream = socket.connect(self.mailman.smtp).await.expect("mailman");
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        assert_eq!(reply(&mut r).await, 220);
        w.write_all(b"EHLO app.e2e.test\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 250);
        for (i, rcpt) in to.iter().enumerate() {
            let msg = format!(
                "MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n\
                 From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: hook {i}\r\n\
                 Message-ID: <{tag}-{i}@sender.e2e.test>\r\n\r\nhello\r\n.\r\n"
            );
            w.write_all(msg.as_bytes()).await.unwrap();
            for want in [250, 250, 354, 250] {
                assert_eq!(reply(&mut r).await, want, "message {i} to {rcpt}");
            }
        }
        w.write_all(b"QUIT\r\n").await.unwrap();
    }

    async fn api(&self, method: &str, path: &str) -> Value {
        let http = reqwest::Client::new();
        let url = format!("{}{path}", self.api);
        let req = match method {
            "POST" => http.post(url),
            _ => http.get(url),
        };
        let answer = req
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the admin API answers");
        assert_eq!(answer.status(), 200, "{method} {path}");
        answer.json().await.expect("JSON")
    }

    async fn stop(self) {
        self.mailman.stop().await;
        self.postoffice.stop().await;
        self.worker.stop().await;
        drop(self.beanstalkd);
    }
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.expect("read a reply");
        assert!(n > 0, "mailman closed the session");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// Polls `check` every 100 ms until true or `limit` passes.
async fn until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (recipient or "-", type) of each accepted request.
fn kinds(requests: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            let p = &r["payload"];
            let who = p["recipient"]
                .as_str()
                .or_else(|| p["recipients"][0].as_str())
                .unwrap_or("-");
            (who.to_owned(), p["type"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_events_arrive_and_a_hanging_endpoint_delays_nobody() {
    let base = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut all = Receiver::new(
        dir.path(),
        "all",
        SocketAddr::from((ip(base + 6), 9000)),
        "ok",
    );
    let mut hang = Receiver::new(
        dir.path(),
        "hang",
        SocketAddr::from((ip(base + 7), 9000)),
        "hang",
    );
    let mut bounces = Receiver::new(
        dir.path(),
        "bounces",
        SocketAddr::from((ip(base + 8), 9000)),
        "ok",
    );
    all.start().await;
    hang.start().await;
    bounces.start().await;
    let mut hang_ep = hang.endpoint("hang", &["queued", "delivered", "deferred", "bounced"]);
    hang_ep.timeout = Duration::from_secs(60);
    let mut bounce_ep = bounces.endpoint("bounces", &["bounced"]);
    bounce_ep.sender_domains = vec!["sender.e2e.test".into()];
    let mut other_ep = bounces.endpoint("other-host", &["queued", "delivered", "bounced"]);
    other_ep.hosts = vec!["web9.e2e.test".into()];
    // Idle connections closed soon, so that the worker's next try opens a new one and sees
    // a changed behaviour.
    let rcpt = || {
        Behaviour::new()
            .rcpt(NOBODY, UNKNOWN)
            .idle_timeout(Duration::from_millis(300))
    };
    let chain = Chain::start(
        base,
        rcpt().rcpt(LATER, BUSY),
        vec![
            hang_ep,
            all.endpoint("all", &["queued", "delivered", "deferred", "bounced"]),
            bounce_ep,
            other_ep,
        ],
    )
    .await;
    let started = tokio::time::Instant::now();
    chain.send("right", &[OK, LATER, NOBODY]).await;

    // The busy mailbox is deferred (the endpoint hears it), then let through.
    let deferred = || {
        all.accepted()
            .iter()
            .any(|r| r["payload"]["type"] == "deferred" && r["payload"]["recipient"] == LATER)
    };
    assert!(
        until(Duration::from_secs(30), deferred).await,
        "{:#?}",
        all.requests()
    );
    chain
        .rcpt_mx
        .set_behaviour(rcpt().hostname("mx.rcpt.e2e.test"));
    let mut want: Vec<(String, String)> = [
        (OK, "delivered"),
        (OK, "queued"),
        (LATER, "deferred"),
        (LATER, "delivered"),
        (LATER, "queued"),
        (NOBODY, "bounced"),
        (NOBODY, "queued"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    let complete = || kinds(&all.accepted()) == want;
    assert!(
        until(Duration::from_secs(30), complete).await,
        "got {:?}",
        kinds(&all.accepted())
    );
    // ... while the hanging endpoint holds its first requests open (its timeout is 60 s).
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(55), "took {waited:?}");
    assert!(
        !hang.requests().is_empty(),
        "the hanging endpoint was called"
    );
    assert!(hang.requests().iter().all(|r| r["hang"] == true));

    let accepted = all.accepted();
    assert!(
        all.requests().iter().all(|r| r["sig_ok"] == true),
        "every signature checks"
    );
    for r in &accepted {
        let p = &r["payload"];
        assert_eq!(p["v"], 1);
        assert_eq!(r["header_id"], p["id"]);
        assert_eq!(p["host"], "web1.e2e.test");
        assert_eq!(p["sender"], SENDER);
        assert!(
            p["message_id"].as_str().unwrap().starts_with("right-"),
            "{p}"
        );
        assert!(p["time"].as_str().unwrap().ends_with('Z'));
    }
    let find = |rcpt: &str, ty: &str| {
        accepted
            .iter()
            .map(|r| &r["payload"])
            .find(|p| p["recipient"] == rcpt && p["type"] == ty)
            .cloned()
            .unwrap()
    };
    let d = find(OK, "delivered");
    assert_eq!(d["code"], 250);
    assert_eq!(d["mx"], "mx.rcpt.e2e.test");
    assert_eq!(d["ip"], ip(base + 2).to_string());
    assert_eq!(d["attempt"], 1);
    assert_eq!(d["tls"], false);
    let b = find(NOBODY, "bounced");
    assert_eq!(b["code"], 550);
    assert_eq!(b["enhanced_code"], "5.1.1");
    assert!(b["reply"].as_str().unwrap().contains("no such user"), "{b}");
    let l = find(LATER, "deferred");
    assert_eq!(l["code"], 451);
    assert_eq!(l["enhanced_code"], "4.2.1");
    assert!(find(LATER, "delivered")["attempt"].as_u64().unwrap() >= 2);
    // One queue id per message, none of the bounce (DSN) the worker sent for NOBODY.
    let queue_ids: HashSet<&str> = accepted
        .iter()
        .filter_map(|r| r["payload"]["queue_id"].as_str())
        .collect();
    assert_eq!(queue_ids.len(), 3, "{queue_ids:?}");

    // The sender-domain filter: only the bounce; the host filter: nothing.
    assert!(until(Duration::from_secs(10), || bounces.accepted().len() == 1).await);
    assert_eq!(
        kinds(&bounces.accepted()),
        [(NOBODY.to_string(), "bounced".to_string())]
    );
    let counts = chain.api("GET", "/api/v1/webhooks").await;
    let names: Vec<&str> = counts["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["endpoint"].as_str())
        .collect();
    assert!(!names.contains(&"other-host"), "{counts}");
    chain.stop().await;
}

/// The receiver is down for two minutes, then back: every event arrives, each event id
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_two_minutes_gets_every_event_once() {
    let base = 30;
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(
        dir.path(),
        "down",
        SocketAddr::from((ip(base + 6), 9000)),
        "ok",
    );
    let chain = Chain::start(
        base,
        Behaviour::new(),
        vec![rx.endpoint("down", &["queued", "delivered"])],
    )
    .await;
    let to: Vec<String> = (0..10).map(|i| format!("user{i}@rcpt.e2e.test")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    chain.send("down", &to).await;
    assert!(chain
        .rcpt_mx
        .wait_for(10, Duration::from_secs(30))
        .await
        .is_some());
    tokio::time::sleep(Duration::from_secs(120)).await;
    let waiting = chain
        .api(
            "GET",
            "/api/v1/webhooks/deliveries?endpoint=down&status=pending&limit=100",
        )
        .await;
    let rows = waiting["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 20, "{waiting}");
    assert!(
        rows.iter().all(|r| r["attempts"].as_u64().unwrap() >= 3
            && r["last_error"].as_str().unwrap().contains("connect")),
        "{waiting}"
    );
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();

    rx.start().await;
    assert!(
        until(Duration::from_secs(30), || rx.accepted().len() >= 20).await,
        "{} of 20",
        rx.accepted().len()
    );
    // Settle: nothing more comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = rx.accepted();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        assert_eq!(r["sig_ok"], true);
        *per_id
            .entry(r["payload"]["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(per_id.values().all(|&n| n == 1), "{per_id:?}");
    assert_eq!(per_id.keys().cloned().collect::<HashSet<_>>(), ids);
    let counts = chain.api("GET", "/api/v1/webhooks").await;
    assert_eq!(counts["endpoints"][0]["done"], 20, "{counts}");
    assert_eq!(counts["endpoints"][0]["pending"], 0, "{counts}");
    chain.stop().await;
}

/// A receiver answering 500 twice per event, then 200: the same event id and body each
/// time, with the delivery attempt counting up; and an endpoint that never answers 2xx is
/// marked failed after max_age, listed, and retried on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_retried_with_the_same_event_and_fail_after_max_age() {
    let base = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut flaky = Receiver::new(
        dir.path(),
        "flaky",
        SocketAddr::from((ip(base + 6), 9000)),
        "fail-first=2",
    );
    let mut broken = Receiver::new(
        dir.path(),
        "broken",
        SocketAddr::from((ip(base + 7), 9000)),
        "status=503",
    );
    flaky.start().await;
    broken.start().await;
    let mut doomed = broken.endpoint("broken", &["delivered"]);
    doomed.timeout = Duration::from_secs(1);
    doomed.max_age = Duration::from_secs(4);
    let chain = Chain::start(
        base,
        Behaviour::new(),
        vec![flaky.endpoint("flaky", &["delivered"]), doomed],
    )
    .await;
    // The webhook routes are behind the admin API's token.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/v1/webhooks", chain.api))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    chain.send("flaky", &[OK]).await;
    assert!(
        until(Duration::from_secs(30), || flaky.accepted().len() == 1).await,
        "{:#?}",
        flaky.requests()
    );
    let all = flaky.requests();
    assert_eq!(all.len(), 3, "{all:#?}");
    let statuses: Vec<u64> = all.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let attempts: Vec<&str> = all.iter().map(|r| r["attempt"].as_str().unwrap()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(all
        .iter()
        .all(|r| r["payload"] == all[0]["payload"] && r["sig_ok"] == true));

    // The broken endpoint: failed after max_age (4 s), with its last answer.
    let failed = || async {
        chain
            .api(
                "GET",
                "/api/v1/webhooks/deliveries?endpoint=broken&status=failed",
            )
            .await
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let page = failed().await;
        let rows = page["deliveries"].as_array().cloned().unwrap_or_default();
        if !rows.is_empty() {
            break rows;
        }
        assert!(tokio::time::Instant::now() < end, "never marked failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows[0]["last_code"], 503);
    assert_eq!(rows[0]["event_id"], all[0]["payload"]["id"]);
    let tries = rows[0]["attempts"].as_u64().unwrap();
    assert!(tries >= 2, "{rows:?}");
    assert_eq!(broken.requests().len() as u64, tries);
    // No more tries once failed...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(broken.requests().len() as u64, tries);
    // ... until an operator asks.
    let retried = chain
        .api("POST", "/api/v1/webhooks/retry?endpoint=broken")
        .await;
    assert_eq!(retried["retried"], 1);
    assert!(
        until(Duration::from_secs(10), || broken.requests().len() as u64
            > tries)
        .await,
        "retried"
    );
    chain.stop().await;
}
