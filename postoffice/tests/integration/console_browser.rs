//! The operator console in a real browser (headless Chromium through chromedriver, see
//! `browser.rs`) against a real post office with a SQLite ledger and beanstalkd: log in and
//! see the overview, search a message and open its timeline, a wrong password, a form whose
//! CSRF token was taken out, an XSS payload in a subject shown as text with no dialog. Each
//! test saves screenshots under target/console-screenshots/.

use std::net::Ipv4Addr;

use hedwig_queue::event::Outcome;

use crate::browser::Browser;
use crate::console_support::{attempt, now, queued, Console, DnsFixture, PASSWORD, USER};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 150, last)
}

async fn log_in(browser: &Browser, console: &Console, user: &str, password: &str) {
    browser
        .goto(&format!("{}/console/login", console.base))
        .await;
    browser.fill("user", user).await;
    browser.fill("password", password).await;
    browser.click("button[type=submit]").await;
}

#[tokio::test]
async fn browser_login_overview_search_and_timeline() {
    let console = Console::start(ip(60), |_| {}).await;
    let t = now() - 120_000;
    let mut events = Vec::new();
    for i in 0..12u64 {
        let id = format!("01BROWSE{i:02}");
        events.push(queued(
            &id,
            t + i * 5_000,
            "web1.example.com",
            "app@example.com",
            &[&format!("user{i}@example.org")],
            &format!("Invoice {i}"),
        ));
        let (outcome, code, reply) = match i % 4 {
            0 => (
                Outcome::Deferred,
                451,
                "451 4.7.1 greylisted, try again later",
            ),
            1 => (Outcome::Bounced, 550, "550 5.1.1 no such user"),
            _ => (Outcome::Sent, 250, "250 2.0.0 ok"),
        };
        events.push(attempt(
            &id,
            t + i * 5_000 + 900,
            &format!("user{i}@example.org"),
            outcome,
            code,
            reply,
        ));
    }
    console.record(events, "01BROWSE11").await;
    let browser = Browser::start().await;
    log_in(&browser, &console, USER, PASSWORD).await;
    assert_eq!(browser.url().await, format!("{}/console/", console.base));
    assert_eq!(browser.text("h1").await, "Overview");
    let body = browser.body().await;
    assert!(
        body.contains("Stuck messages") && body.contains("hedwig-events"),
        "{body}"
    );
    assert!(body.contains(USER), "the user is shown");
    // 12 recipients at example.org: 3 deferred (waiting), 3 bounced.
    let domains = browser.text("table.domains").await;
    assert!(
        domains.contains("example.org 12 25.0 % 25.0 %"),
        "{domains}"
    );
    browser.screenshot("overview").await;

    browser.click("nav a[href=\"/console/messages\"]").await;
    browser.fill("recipient", "user5@example.org").await;
    browser.click("form.search button[type=submit]").await;
    let rows = browser.text("table.messages tbody").await;
    assert!(
        rows.contains("01BROWSE05") && rows.contains("Invoice 5"),
        "{rows}"
    );
    assert!(!rows.contains("01BROWSE04"), "{rows}");
    browser.screenshot("messages").await;
    browser
        .click("table.messages a[href=\"/console/messages/01BROWSE05\"]")
        .await;
    let timeline = browser.text("table.timeline").await;
    assert!(timeline.contains("550 5.1.1 no such user"), "{timeline}");
    assert!(
        timeline.contains("bounced") && timeline.contains("queued"),
        "{timeline}"
    );
    browser.screenshot("message").await;
    browser.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn browser_wrong_password_fails() {
    let console = Console::start(ip(61), |_| {}).await;
    let browser = Browser::start().await;
    log_in(&browser, &console, USER, "not the password").await;
    assert_eq!(
        browser.url().await,
        format!("{}/console/login", console.base)
    );
    assert!(browser.body().await.contains("Wrong user or password"));
    browser.screenshot("login-failed").await;
    browser
        .goto(&format!("{}/console/messages", console.base))
        .await;
    assert_eq!(
        browser.url().await,
        format!("{}/console/login", console.base),
        "no session"
    );
    browser.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn browser_form_without_csrf_token_is_refused() {
    let console = Console::start(ip(62), |_| {}).await;
    let browser = Browser::start().await;
    log_in(&browser, &console, USER, PASSWORD).await;
    browser
        .goto(&format!("{}/console/suppressions", console.base))
        .await;
    // Forge the page's own form: take its token out (WebDriver's script runs outside the
    // page's CSP), then submit it as an operator would.
    browser
        .client
        .execute(
            "document.querySelector('form[action=\"/console/suppressions/add\"] input[name=csrf]').remove()",
            vec![],
        )
        .await
        .unwrap();
    browser
        .fill_css(
            "form[action=\"/console/suppressions/add\"] [name=recipient]",
            "forged@example.org",
        )
        .await;
    browser
        .click("form[action=\"/console/suppressions/add\"] button[type=submit]")
        .await;
    let body = browser.body().await;
    assert!(body.contains("403") && body.contains("CSRF"), "{body}");
    browser.screenshot("csrf-refused").await;
    browser
        .goto(&format!("{}/console/suppressions", console.base))
        .await;
    assert!(
        !browser.body().await.contains("forged@example.org"),
        "nothing added"
    );
    browser.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn browser_xss_in_a_subject_shows_as_text() {
    let console = Console::start(ip(63), |_| {}).await;
    let subject = "<img src=x onerror=alert(1)> <script>alert(2)</script> \"><svg onload=alert(3)>";
    console
        .record(
            vec![queued(
                "01XSSB",
                now(),
                "web1.example.com",
                "app@example.com",
                &["bob@example.org"],
                subject,
            )],
            "01XSSB",
        )
        .await;
    let browser = Browser::start().await;
    log_in(&browser, &console, USER, PASSWORD).await;
    browser
        .goto(&format!("{}/console/messages/01XSSB", console.base))
        .await;
    let shown = browser.text("dl.facts dd").await;
    assert_eq!(shown, subject, "the subject as text, whole");
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no dialog is open"
    );
    let images = browser
        .client
        .find_all(fantoccini::Locator::Css(
            "main img, main svg[onload], main script",
        ))
        .await
        .unwrap();
    assert!(images.is_empty(), "no element made from the payload");
    browser.screenshot("xss-subject").await;
    browser
        .goto(&format!("{}/console/messages", console.base))
        .await;
    assert!(browser
        .text("table.messages")
        .await
        .contains("<script>alert(2)</script>"));
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no dialog on the list either"
    );
    browser.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn browser_webhooks_page_and_retry() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "webhook-secret-0123456789abcdef\n").unwrap();
    let closed = format!(
        "http://127.0.150.65:{}/hook",
        hedwig_testkit::net::free_port(ip(65))
    );
    let hook: postoffice::webhooks::WebhookConfig = serde_json::from_value(serde_json::json!({
        "name": "crm", "url": closed, "secret_file": secret.path(), "events": ["queued"],
        "timeout": "1s", "backoff": "1h", "max_backoff": "1h"
    }))
    .unwrap();
    let console = Console::start(ip(64), |c| c.webhooks = vec![hook]).await;
    console
        .record(
            vec![queued(
                "01HOOKB",
                now(),
                "web1.example.com",
                "app@example.com",
                &["bob@example.org"],
                "Welcome",
            )],
            "01HOOKB",
        )
        .await;
    let browser = Browser::start().await;
    log_in(&browser, &console, USER, PASSWORD).await;
    let tried = crate::console_support::until(std::time::Duration::from_secs(15), || async {
        browser
            .goto(&format!("{}/console/webhooks?status=pending", console.base))
            .await;
        browser.body().await.contains("01HOOKB")
    })
    .await;
    assert!(tried, "the delivery is listed");
    browser.screenshot("webhooks").await;
    browser
        .click("table.endpoints button[type=submit]:nth-of-type(1)")
        .await;
    assert!(browser
        .text("p.notice")
        .await
        .contains("deliveries of crm made due now"));
    browser.stop().await;
    console.stop().await;
}

#[tokio::test]
async fn browser_dns_page_shows_the_records_to_publish() {
    let fixture = DnsFixture::start(ip(66)).await;
    let config = fixture.config();
    let console = Console::start(ip(67), move |c| c.console.dns = Some(config)).await;
    let browser = Browser::start().await;
    log_in(&browser, &console, USER, PASSWORD).await;
    browser.goto(&format!("{}/console/dns", console.base)).await;
    let body = browser.body().await;
    assert!(
        body.contains("send.example.test") && body.contains("_dmarc.send.example.test."),
        "{body}"
    );
    browser.screenshot("dns").await;
    fixture.publish_dmarc();
    browser.click("form.inline button[type=submit]").await;
    let body = browser.body().await;
    assert!(body.contains("every required record is right"), "{body}");
    browser.stop().await;
    console.stop().await;
}
