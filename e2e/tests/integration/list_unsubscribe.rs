//! A one-click unsubscribe from one mailing list (issue 19: "that sender domain (and list)")
//! through the whole chain: msmtp -> mailman -> the post office (ledger writer, suppression
//! at intake, `unsubscribe:`) -> beanstalkd -> the worker (`unsubscribe:` for the sending
//! host) -> the recipients' MX.
//!
//! Alice unsubscribes (a real HTTP POST of the link in her copy) from the newsletter with
//! `List-Id: <weekly.sender.e2e.test>`. The entry holds for that list of the sender domain
//! alone. The next message of that list (its `List-Id:` written with another phrase and
//! case) reaches Bob only; a message of another list of the same domain and a password reset
//! without a `List-Id:` reach Alice. The ledger shows her `suppressed` by the list's entry.
//!
//! This file's addresses: 127.0.230.120-123.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use serde_json::Value;

use crate::common::check::wait_for;
use crate::common::{
    clients, worker_config, zone_at, Mailman, Postoffice, MAILMAN_FQDN, SENDER, WAIT,
};

const TOKEN: &str = "e2e-list-unsubscribe-api-token-0123456789";
const UNSUB_SECRET: &str = "e2e-list-unsubscribe-secret-0123456789abcdef";
const ALICE: &str = "alice@rcpt.e2e.test";
const BOB: &str = "bob@rcpt.e2e.test";
const WEEKLY: &str = "weekly.sender.e2e.test";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 230, last)
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

async fn send(mailman: SocketAddr, to: &[&str], subject: &str, extra_headers: &str) {
    let message = format!(
        "From: News <{SENDER}>\r\nTo: {}\r\nSubject: {subject}\r\n{extra_headers}\r\nhello\r\n",
        to.join(", ")
    );
    let args: Vec<String> = clients::msmtp_options_to(mailman, std::net::IpAddr::V4(ip(123)))
        .into_iter()
        .chain(to.iter().map(|t| t.to_string()))
        .collect();
    clients::run("/usr/bin/msmtp", &args, message.as_bytes()).await;
}

/// The URL in a message's `List-Unsubscribe:` field.
fn link(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let line = text
        .lines()
        .find(|l| l.starts_with("List-Unsubscribe: <"))
        .unwrap_or_else(|| panic!("no List-Unsubscribe in {text}"));
    line.trim_start_matches("List-Unsubscribe: <")
        .trim_end_matches('>')
        .to_owned()
}

fn subject(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_from_one_list_stops_that_list_only() {
    let beanstalkd = Beanstalkd::start_on(ip(120));
    let dns_addr = SocketAddr::from((ip(120), hedwig_testkit::net::free_port(ip(120))));
    let dns = DnsServer::start_on(dns_addr, zone_at(ip(121), ip(121)))
        .await
        .expect("DNS");
    let mx = SmtpReceiver::start(
        SocketAddr::from((ip(121), 25)),
        Behaviour::new().hostname("mx.rcpt.e2e.test"),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let api_addr = SocketAddr::from((ip(122), hedwig_testkit::net::free_port(ip(122))));
    let po_addr = SocketAddr::from((ip(122), hedwig_testkit::net::free_port(ip(122))));
    let dir = data.path().to_path_buf();
    let postoffice = Postoffice::start_with(po_addr, &beanstalkd, |c| {
        c.data_dir = dir;
        c.ledger.writer = true;
        c.ledger.api_listen = Some(api_addr);
        c.ledger.api_token_file = Some(token_file);
        c.suppression.refresh = Duration::from_millis(200);
        c.unsubscribe = Some(postoffice::unsubscribe::UnsubscribeConfig {
            secret: Some(UNSUB_SECRET.into()),
            secret_file: None,
        });
    })
    .await;
    let mut config = worker_config(&beanstalkd, dns.addr());
    config.unsubscribe = worker::unsubscribe::UnsubscribeConfig {
        url: Some(format!("http://{po_addr}/unsubscribe")),
        secret: Some(UNSUB_SECRET.into()),
        hosts: vec![MAILMAN_FQDN.into()],
        ..Default::default()
    };
    let worker = crate::common::Worker::start(config);
    let mailman = Mailman::start_on(SocketAddr::from((ip(122), 0)), po_addr).await;
    let http = reqwest::Client::new();

    // The weekly newsletter; Alice's copy has her link; she clicks it (one-click POST).
    send(
        mailman.smtp,
        &[ALICE],
        "weekly 1",
        &format!("List-Id: Weekly news <{WEEKLY}>\r\n"),
    )
    .await;
    let got = wait_for(&mx, 1, "the first newsletter").await;
    let answer = http
        .post(link(&got[0].data))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let page = answer.text().await.unwrap();
    assert!(page.contains(WEEKLY), "the page names the list: {page}");
    let listed = api_until(&http, api_addr, "/api/v1/suppressions", |v| {
        v["suppressions"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let entries = listed["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["recipient"], ALICE);
    assert_eq!(entries[0]["scope"], "sender.e2e.test");
    assert_eq!(entries[0]["list_id"], WEEKLY, "{listed}");
    assert_eq!(entries[0]["reason"], "unsubscribed");
    // The API's list filter finds it; "whole scope only" does not.
    let by_list = api(
        &http,
        api_addr,
        &format!("/api/v1/suppressions?list={WEEKLY}"),
    )
    .await;
    assert_eq!(by_list["suppressions"].as_array().map(Vec::len), Some(1));
    let whole = api(&http, api_addr, "/api/v1/suppressions?list=none").await;
    assert_eq!(whole["suppressions"], Value::Array(vec![]), "{whole}");

    // Intake has the entry once its gauge says so (reloaded every 200 ms).
    let mut loaded = false;
    for _ in 0..(WAIT.as_millis() / 100) {
        let metrics = http
            .get(format!("http://{po_addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("hedwig_postoffice_suppression_entries 1") {
            loaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(loaded, "intake did not load the entry within {WAIT:?}");

    // The next newsletter (the List-Id written otherwise: another phrase, other case):
    // Bob only.
    send(
        mailman.smtp,
        &[ALICE, BOB],
        "weekly 2",
        "List-Id: \"Weekly <news>\" (same list) <Weekly.Sender.E2E.test>\r\n",
    )
    .await;
    let got = wait_for(&mx, 2, "the second newsletter").await;
    assert_eq!(got[1].rcpt_to, [BOB]);
    assert_eq!(subject(&got[1].data), "weekly 2");
    // Another list of the same sender domain: Alice gets it.
    send(
        mailman.smtp,
        &[ALICE],
        "offers",
        "List-Id: Offers <offers.sender.e2e.test>\r\n",
    )
    .await;
    let got = wait_for(&mx, 3, "the other list").await;
    assert_eq!(got[2].rcpt_to, [ALICE]);
    assert_eq!(subject(&got[2].data), "offers");
    // Mail of the domain that is no list's (a password reset): Alice gets it.
    send(mailman.smtp, &[ALICE], "password reset", "").await;
    let got = wait_for(&mx, 4, "the password reset").await;
    assert_eq!(got[3].rcpt_to, [ALICE]);
    assert_eq!(subject(&got[3].data), "password reset");
    // Alice's copy of the second newsletter never came.
    assert!(
        !got.iter()
            .any(|m| m.rcpt_to == [ALICE] && subject(&m.data) == "weekly 2"),
        "{:?}",
        got.iter()
            .map(|m| (m.rcpt_to.clone(), subject(&m.data)))
            .collect::<Vec<_>>()
    );

    // The ledger: the second newsletter's timeline has Alice `suppressed` by the list's entry.
    let messages = api_until(
        &http,
        api_addr,
        &format!("/api/v1/messages?recipient={ALICE}"),
        |v| v["messages"].as_array().is_some_and(|m| m.len() == 4),
    )
    .await;
    let mut replies = Vec::new();
    for m in messages["messages"].as_array().unwrap() {
        let queue_id = m["queue_id"].as_str().unwrap();
        let timeline = api(&http, api_addr, &format!("/api/v1/messages/{queue_id}")).await;
        for r in timeline["recipients"].as_array().unwrap() {
            if r["recipient"] == ALICE {
                replies.push((
                    r["status"].as_str().unwrap_or("").to_owned(),
                    r["reply"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    let suppressed: Vec<_> = replies.iter().filter(|(s, _)| s == "suppressed").collect();
    assert_eq!(suppressed.len(), 1, "{replies:?}");
    assert!(
        suppressed[0]
            .1
            .contains(&format!("scope sender.e2e.test, list {WEEKLY}")),
        "{replies:?}"
    );

    mailman.stop().await;
    postoffice.stop().await;
    worker.stop().await;
}
