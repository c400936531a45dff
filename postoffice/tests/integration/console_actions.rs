//! The console's actions in a real browser against a real post office, beanstalkd, ledger
//! writer, worker and SMTP receiver: requeue a failed message (through the confirmation that
//! says how many) and see it delivered; hold and release a host; remove a suppression.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hedwig_queue::event::Outcome;
use hedwig_queue::tubes::TUBE_FAILED;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use tokio_util::sync::CancellationToken;

use crate::browser::Browser;
use crate::common::{failed_record, put};
use crate::console_support::{attempt, now, queued, until, Console, PASSWORD, TOKEN, USER};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 150, last)
}

async fn log_in(browser: &Browser, console: &Console) {
    browser
        .goto(&format!("{}/console/login", console.base))
        .await;
    browser.fill("user", USER).await;
    browser.fill("password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    assert_eq!(browser.url().await, format!("{}/console/", console.base));
}

/// A worker in this process delivering to `mx` through the test DNS.
fn worker(console: &Console, dns: &DnsServer, stop: &CancellationToken) {
    let t = Duration::from_secs(5);
    let config = worker::Config {
        beanstalkd: vec![console.beanstalkd.url()],
        concurrency: 1,
        hostname: "relay.hedwig.test".into(),
        nameservers: vec![dns.addr().to_string()],
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
        http_listen: String::new(),
        job_ttr: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        ..worker::Config::default()
    };
    tokio::spawn(worker::run(config, stop.clone()));
}

#[tokio::test]
async fn browser_requeue_a_failed_message_and_see_it_delivered() {
    let console = Console::start(ip(70), |_| {}).await;
    let zone = Zone::new()
        .mx("rcpt.test", 10, "mx.rcpt.test")
        .a("mx.rcpt.test", &ip(72).to_string());
    let dns = DnsServer::start_on(
        SocketAddr::from((ip(71), hedwig_testkit::net::free_port(ip(71)))),
        zone,
    )
    .await
    .expect("DNS server");
    let mx = SmtpReceiver::start(
        SocketAddr::from((ip(72), 25)),
        Behaviour::new().hostname("mx.rcpt.test"),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    // A message that failed for good (as the worker leaves it), on record in the ledger.
    let t = now();
    console
        .record(
            vec![
                queued(
                    "01REQ",
                    t - 60_000,
                    "web1.example.com",
                    "app@example.com",
                    &["bob@rcpt.test"],
                    "Quarterly report",
                ),
                attempt(
                    "01REQ",
                    t - 59_000,
                    "bob@rcpt.test",
                    Outcome::Failed,
                    554,
                    "554 5.7.1 rejected by policy",
                ),
            ],
            "01REQ",
        )
        .await;
    put(
        &console.beanstalkd.url(),
        TUBE_FAILED,
        &failed_record(
            "01REQ",
            "web1.example.com",
            &["bob@rcpt.test"],
            554,
            "5.7.1",
            t / 1000 - 59,
        ),
    )
    .await;
    let stop = CancellationToken::new();
    worker(&console, &dns, &stop);

    let browser = Browser::start().await;
    log_in(&browser, &console).await;
    browser.click("nav a[href=\"/console/failed\"]").await;
    browser.fill("domain", "rcpt.test").await;
    browser.click("form.search button[type=submit]").await;
    let rows = browser.text("table.failed").await;
    assert!(
        rows.contains("01REQ") && rows.contains("bob@rcpt.test"),
        "{rows}"
    );
    browser.screenshot("failed").await;
    browser.click("button[value=requeue]").await;
    assert_eq!(
        browser.text("#confirm-count").await,
        "Put 1 failed recipients back for delivery?"
    );
    browser.screenshot("failed-confirm").await;
    browser
        .click("form[action=\"/console/failed/act\"] button[type=submit]")
        .await;
    assert_eq!(browser.text("#done-count").await, "1 recipients requeued.");

    let delivered = until(Duration::from_secs(20), || async {
        mx.received()
            .iter()
            .any(|m| m.rcpt_to.iter().any(|r| r == "bob@rcpt.test"))
    })
    .await;
    assert!(delivered, "the worker delivered the requeued message");
    // The ledger has the requeue (by the console user) and the delivery.
    let http = reqwest::Client::new();
    let sent = until(Duration::from_secs(10), || async {
        let r = http
            .get(format!("{}/api/v1/messages/01REQ", console.base))
            .bearer_auth(TOKEN)
            .send()
            .await;
        match r {
            Ok(r) => r
                .text()
                .await
                .is_ok_and(|t| t.contains("\"status\":\"sent\"")),
            Err(_) => false,
        }
    })
    .await;
    assert!(sent, "the ledger shows it sent");
    browser
        .goto(&format!("{}/console/messages/01REQ", console.base))
        .await;
    let timeline = browser.text("table.timeline").await;
    assert!(
        timeline.contains("requeued") && timeline.contains("console requeue (alice)"),
        "{timeline}"
    );
    assert!(timeline.contains("sent"), "{timeline}");
    browser.screenshot("requeued-delivered").await;
    browser.stop().await;
    stop.cancel();
    console.stop().await;
}

#[tokio::test]
async fn browser_hold_and_release_a_host() {
    let console = Console::start(ip(73), |_| {}).await;
    console
        .record(
            vec![queued(
                "01HOLD",
                now(),
                "web7.example.com",
                "app@example.com",
                &["bob@example.org"],
                "Hi",
            )],
            "01HOLD",
        )
        .await;
    let browser = Browser::start().await;
    log_in(&browser, &console).await;
    browser.click("nav a[href=\"/console/hosts\"]").await;
    let table = browser.text("table.hosts").await;
    assert!(
        table.contains("web7.example.com") && !table.contains("held"),
        "{table}"
    );
    browser
        .click("table.hosts form[action=\"/console/hosts/hold\"] button")
        .await;
    assert!(browser
        .text("p.notice")
        .await
        .contains("web7.example.com is held"));
    assert!(browser.text("table.hosts").await.contains("held"));
    let mut client = beanstalk::Client::connect(console.beanstalkd.url())
        .await
        .unwrap();
    let tubes = hedwig_queue::Tubes::default();
    let list = hedwig_queue::hold::read(&mut client, &tubes).await.unwrap();
    assert!(
        list.is_held("web7.example.com"),
        "on beanstalkd's hold list"
    );
    browser.screenshot("hosts-held").await;
    browser
        .click("table.hosts form[action=\"/console/hosts/release\"] button")
        .await;
    assert!(browser
        .text("p.notice")
        .await
        .contains("web7.example.com released"));
    assert!(!browser.text("table.hosts").await.contains("held"));
    let list = hedwig_queue::hold::read(&mut client, &tubes).await.unwrap();
    assert!(!list.is_held("web7.example.com"), "off the hold list");
    browser.screenshot("hosts").await;
    browser.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn browser_remove_a_suppression() {
    let console = Console::start(ip(74), |_| {}).await;
    let http = reqwest::Client::new();
    for rcpt in ["gone@example.org", "keep@example.org"] {
        let r = http
            .post(format!("{}/api/v1/suppressions", console.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"recipient": rcpt, "reason": "mailbox closed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let browser = Browser::start().await;
    log_in(&browser, &console).await;
    browser.click("nav a[href=\"/console/suppressions\"]").await;
    let table = browser.text("table.suppressions").await;
    assert!(
        table.contains("gone@example.org") && table.contains("keep@example.org"),
        "{table}"
    );
    browser.screenshot("suppressions").await;
    browser
        .click("table.suppressions form:has(input[value=\"gone@example.org\"]) button")
        .await;
    assert!(browser
        .text("p.notice")
        .await
        .contains("1 entries removed for gone@example.org"));
    let table = browser.text("table.suppressions").await;
    assert!(
        !table.contains("gone@example.org") && table.contains("keep@example.org"),
        "{table}"
    );
    let listed = http
        .get(format!("{}/api/v1/suppressions", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !listed.contains("gone@example.org") && listed.contains("keep@example.org"),
        "{listed}"
    );
    browser.stop().await;
    console.stop().await;
}
