//! One-click unsubscribe (RFC 8058, issue 19) through the whole chain: msmtp -> mailman -> the
//! post office (ledger writer, suppression at intake, `unsubscribe:`) -> beanstalkd -> the
//! worker (`unsubscribe:` for the sending host, DKIM) -> the recipients' MX.
//!
//! Each recipient's copy carries its own `List-Unsubscribe: <…/unsubscribe/<token>>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, covered by both DKIM signatures (they
//! verify with python3-dkim). A GET of the link only asks; a real HTTP POST (the body a mailbox
//! provider sends) records `unsubscribed` for that recipient alone and puts it on the sender
//! domain's suppression list for the message's `List-Id:`; the next message of that list to
//! it never reaches the MX while the other recipient still gets mail (other lists and mail
//! without a list: `list_unsubscribe.rs`). A forged token is refused and changes nothing; a message with
//! the app's own `List-Unsubscribe:` keeps it and gets none added.
//!
//! This file's addresses: 127.0.140.120-123.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;
use serde_json::Value;

use crate::common::check::{assert_dkim_passes, wait_for};
use crate::common::{
    clients, worker_config, zone_at, Mailman, Postoffice, MAILMAN_FQDN, SENDER, WAIT,
};

const TOKEN: &str = "e2e-unsubscribe-api-token-0123456789";
const UNSUB_SECRET: &str = "e2e-unsubscribe-secret-0123456789abcdef";
const ALICE: &str = "alice@rcpt.e2e.test";
const BOB: &str = "bob@rcpt.e2e.test";

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

async fn send(mailman: SocketAddr, to: &[&str], extra_headers: &str) {
    let message = format!(
        "From: News <{SENDER}>\r\nTo: {}\r\nSubject: weekly news\r\n{extra_headers}\r\nhello\r\n",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_click_post_unsubscribes_one_recipient_from_the_sender_domain() {
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

    // One message to two recipients: two copies, each with its own link, both signed.
    send(
        mailman.smtp,
        &[ALICE, BOB],
        "List-Id: Weekly news <weekly.sender.e2e.test>\r\n",
    )
    .await;
    let got = wait_for(&mx, 2, "the first message").await;
    let by_rcpt = |r: &str| {
        got.iter()
            .find(|m| m.rcpt_to == [r])
            .unwrap_or_else(|| panic!("a copy for {r} alone"))
    };
    let (alice, bob) = (by_rcpt(ALICE), by_rcpt(BOB));
    let (alice_link, bob_link) = (link(&alice.data), link(&bob.data));
    assert_ne!(alice_link, bob_link);
    assert!(
        alice_link.starts_with(&format!("http://{po_addr}/unsubscribe/")),
        "{alice_link}"
    );
    for copy in [alice, bob] {
        let text = String::from_utf8_lossy(&copy.data);
        assert!(
            text.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{text}"
        );
        // RFC 8058 §4: the signature covers both fields.
        let signature = text
            .split("\r\nDKIM-Signature:")
            .nth(1)
            .or_else(|| text.strip_prefix("DKIM-Signature:"))
            .expect("a DKIM signature");
        let h = signature
            .split("h=")
            .nth(1)
            .unwrap_or("")
            .to_ascii_lowercase();
        let h: String = h
            .split(';')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert!(
            h.split(':').any(|f| f == "list-unsubscribe")
                && h.split(':').any(|f| f == "list-unsubscribe-post"),
            "h={h}"
        );
        assert_dkim_passes(&dns, &copy.data).await;
    }

    // A GET only asks.
    let page = http.get(&alice_link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let body = page.text().await.unwrap();
    assert!(
        body.contains("<form method=\"post\">") && body.contains(ALICE),
        "{body}"
    );
    // A forged token: refused, nothing recorded.
    let mut forged = alice_link.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let answer = http
        .post(&forged)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let none = api(&http, api_addr, "/api/v1/suppressions").await;
    assert_eq!(none["suppressions"], Value::Array(vec![]), "{none}");

    // The one-click POST, as a mailbox provider sends it (twice: the same as once).
    for _ in 0..2 {
        let answer = http
            .post(&alice_link)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let listed = api_until(&http, api_addr, "/api/v1/suppressions", |v| {
        v["suppressions"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let entries = listed["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["recipient"], ALICE);
    assert_eq!(entries[0]["scope"], "sender.e2e.test");
    assert_eq!(entries[0]["list_id"], "weekly.sender.e2e.test");
    assert_eq!(entries[0]["reason"], "unsubscribed");
    assert!(entries[0]["expires_at"].is_null(), "for good: {listed}");
    let first = api(
        &http,
        api_addr,
        &format!("/api/v1/messages?recipient={ALICE}"),
    )
    .await;
    let queue_id = first["messages"][0]["queue_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let timeline = api_until(
        &http,
        api_addr,
        &format!("/api/v1/messages/{queue_id}"),
        |t| {
            t["recipients"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["status"] == "unsubscribed"))
        },
    )
    .await;
    let statuses: Vec<(String, String)> = timeline["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().unwrap_or("").to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&(ALICE.into(), "unsubscribed".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(BOB.into(), "sent".into())),
        "{statuses:?}"
    );
    let unsubscribed = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "unsubscribed")
        .count();
    assert_eq!(
        unsubscribed, 1,
        "a repeated POST records nothing new: {timeline}"
    );

    // The next message of the list, once intake has the entry: Bob gets it, Alice does not.
    // The app's own List-Unsubscribe is kept and none is added.
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(
        mailman.smtp,
        &[ALICE, BOB],
        "List-Id: Weekly news <weekly.sender.e2e.test>\r\n\
         List-Unsubscribe: <mailto:leave@sender.e2e.test>\r\n",
    )
    .await;
    let got = wait_for(&mx, 3, "the second message").await;
    let second = &got[2];
    assert_eq!(second.rcpt_to, [BOB]);
    let text = String::from_utf8_lossy(&second.data);
    let fields: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("list-unsubscribe"))
        .collect();
    assert_eq!(
        fields,
        ["List-Unsubscribe: <mailto:leave@sender.e2e.test>"],
        "the app's own field only: {text}"
    );
    let metrics = http
        .get(format!("http://{po_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hedwig_postoffice_unsubscribes_total{reason=\"done\"} 2")
            && metrics.contains("hedwig_postoffice_unsubscribes_total{reason=\"invalid\"} 1"),
        "{metrics}"
    );

    mailman.stop().await;
    postoffice.stop().await;
    worker.stop().await;
}
