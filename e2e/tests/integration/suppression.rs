//! The suppression list through the whole chain, from a real mail client (msmtp) -> mailman
//! -> the post office (ledger writer, API) -> beanstalkd -> the worker -> the recipients' MX:
//! a 550 5.1.1 puts the address on the list; the next message to it alone is accepted by
//! mailman, taken by the post office (200: mailman's spool empties, nothing is retried),
//! never reaches the MX (no RCPT for it), and the ledger shows it `suppressed`. A message to
//! a 550 5.7.1 address goes out again and again.
//!
//! This file's addresses (its own, not a [`Net`](crate::common::Net)): 127.0.140.110-113.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use serde_json::Value;

use crate::common::{clients, worker_config, Mailman, Postoffice, RCPT_DOMAIN, WAIT};

const UNKNOWN: &str = "unknown@rcpt.e2e.test";
const BLOCKED: &str = "blocked@rcpt.e2e.test";
const TOKEN: &str = "e2e-suppression-token-0123456789";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 140, last)
}

async fn api(http: &reqwest::Client, base: SocketAddr, path: &str) -> Value {
    let answer = http
        .get(format!("http://{base}{path}"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the ledger API answers");
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("JSON")
}

/// Polls the API at `path` until `done` holds (bounded by [`WAIT`]).
async fn api_until(
    http: &reqwest::Client,
    base: SocketAddr,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..(WAIT.as_millis() / 100) {
        last = api(http, base, path).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path}: not reached within {WAIT:?}: {last}");
}

async fn send(mailman: SocketAddr, to: &str) {
    let message = format!(
        "From: {}\r\nTo: {to}\r\nSubject: suppression\r\n\r\nhello\r\n",
        crate::common::SENDER
    );
    let args: Vec<String> = clients::msmtp_options_to(mailman, std::net::IpAddr::V4(ip(113)))
        .into_iter()
        .chain([to.to_string()])
        .collect();
    clients::run("/usr/bin/msmtp", &args, message.as_bytes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_suppresses_the_next_message_before_the_mx() {
    let beanstalkd = Beanstalkd::start_on(ip(110));
    let zone = Zone::new()
        .mx(RCPT_DOMAIN, 10, &format!("mx.{RCPT_DOMAIN}"))
        .a(&format!("mx.{RCPT_DOMAIN}"), &ip(111).to_string());
    let dns_addr = SocketAddr::from((ip(110), hedwig_testkit::net::free_port(ip(110))));
    let dns = DnsServer::start_on(dns_addr, zone).await.expect("DNS");
    let mx = SmtpReceiver::start(
        SocketAddr::from((ip(111), 25)),
        Behaviour::new()
            .hostname("mx.rcpt.e2e.test")
            .rcpt(UNKNOWN, "550 5.1.1 <unknown@rcpt.e2e.test>: no such user")
            .rcpt(
                BLOCKED,
                "550 5.7.1 <blocked@rcpt.e2e.test>: blocked by policy",
            ),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let api_addr = SocketAddr::from((ip(112), hedwig_testkit::net::free_port(ip(112))));
    let po_addr = SocketAddr::from((ip(112), hedwig_testkit::net::free_port(ip(112))));
    let dir = data.path().to_path_buf();
    let postoffice = Postoffice::start_with(po_addr, &beanstalkd, |c| {
        c.data_dir = dir;
        c.ledger.writer = true;
        c.ledger.api_listen = Some(api_addr);
        c.ledger.api_token_file = Some(token_file);
        c.suppression.refresh = Duration::from_millis(200);
    })
    .await;
    let worker = crate::common::Worker::start(worker_config(&beanstalkd, dns.addr()));
    let mailman = Mailman::start_on(SocketAddr::from((ip(112), 0)), po_addr).await;
    let http = reqwest::Client::new();

    // The first message to each: refused at RCPT by the MX.
    send(mailman.smtp, UNKNOWN).await;
    send(mailman.smtp, BLOCKED).await;
    let listed = api_until(
        &http,
        api_addr,
        &format!("/api/v1/suppressions?recipient={UNKNOWN}"),
        |v| v["suppressions"].as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
    assert_eq!(listed["suppressions"][0]["scope"], "sender.e2e.test");
    assert_eq!(listed["suppressions"][0]["dsn"], "5.1.1");
    api_until(
        &http,
        api_addr,
        &format!("/api/v1/messages?recipient={BLOCKED}"),
        |v| v["messages"][0]["status"] == "bounced",
    )
    .await;
    let blocked = api(
        &http,
        api_addr,
        &format!("/api/v1/suppressions?recipient={BLOCKED}"),
    )
    .await;
    assert_eq!(
        blocked["suppressions"],
        Value::Array(vec![]),
        "5.7.1 never suppresses"
    );

    // The next ones, once intake has the list.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mx.commands().len();
    send(mailman.smtp, UNKNOWN).await;
    send(mailman.smtp, BLOCKED).await;
    let page = api_until(
        &http,
        api_addr,
        &format!("/api/v1/messages?recipient={UNKNOWN}"),
        |v| {
            v["messages"]
                .as_array()
                .is_some_and(|a| a.len() == 2 && !a[0]["final_at"].is_null())
        },
    )
    .await;
    let newest = page["messages"][0]["queue_id"].as_str().unwrap().to_owned();
    let timeline = api(&http, api_addr, &format!("/api/v1/messages/{newest}")).await;
    assert_eq!(
        timeline["recipients"][0]["status"], "suppressed",
        "{timeline}"
    );
    api_until(
        &http,
        api_addr,
        &format!("/api/v1/messages?recipient={BLOCKED}"),
        |v| {
            v["messages"]
                .as_array()
                .is_some_and(|a| a.len() == 2 && a[0]["status"] == "bounced")
        },
    )
    .await;
    // mailman got its 200 and forgot the message: nothing to retry.
    for _ in 0..(WAIT.as_millis() / 50) {
        if mailman.spooled() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mailman.spooled(), 0);
    let rcpts: Vec<String> = mx
        .commands()
        .into_iter()
        .skip(before)
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    assert!(rcpts.iter().any(|c| c.contains(BLOCKED)), "{rcpts:?}");
    assert!(!rcpts.iter().any(|c| c.contains(UNKNOWN)), "{rcpts:?}");

    mailman.stop().await;
    postoffice.stop().await;
    worker.stop().await;
}
