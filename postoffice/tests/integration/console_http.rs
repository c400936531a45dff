//! The operator console over HTTP against a real post office (SQLite ledger, beanstalkd):
//! login with a user or the token, wrong passwords, the per-address rate limit, sessions
//! required, CSRF refusals, the no-store and security headers, search and timeline, and
//! attacker-controlled mail data (script, attribute and URL payloads in subject, sender,
//! recipient, host and remote reply) shown as text.

use std::net::Ipv4Addr;

use hedwig_queue::event::Outcome;

use crate::console_support::{attempt, now, queued, Console, DnsFixture, PASSWORD, TOKEN, USER};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 150, last)
}

#[tokio::test]
async fn login_sessions_rate_limit_and_headers() {
    let console = Console::start(ip(10), |c| c.console.login_attempts_per_minute = 4).await;
    let anon = console.client(ip(10));
    // Without a session: pages send to the login page, POSTs are refused.
    let r = anon
        .get(format!("{}/console/", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = anon.get(format!("{}/", console.base)).send().await.unwrap();
    assert_eq!(
        r.headers()["location"],
        "/console/",
        "/ leads to the console"
    );
    let r = anon
        .post(format!("{}/console/hosts/hold", console.base))
        .form(&[("host", "web1.example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The API keeps its token check.
    let r = anon
        .get(format!("{}/api/v1/stuck", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A wrong password, an unknown user.
    let r = console.login(&anon, USER, "wrong password").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("Wrong user or password"));
    let r = console.login(&anon, "mallory", PASSWORD).await;
    assert_eq!(r.status(), 401);
    let (status, _) = console.get(&anon, "/console/messages").await;
    assert_eq!(status, 303, "still logged out");

    // The right one: a session cookie with its flags.
    let r = console.login(&anon, USER, PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in [
        "hedwig_console=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without behind_tls: {cookie}"
    );
    let r = anon
        .get(format!("{}/console/messages", console.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'self'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let page = r.text().await.unwrap();
    assert!(
        page.contains(USER) && !page.contains("<script"),
        "no script on any page"
    );

    // Five attempts from this address in the minute: the fifth is refused before checking,
    // even with the right password; another address is not affected.
    assert_eq!(
        console.login(&anon, USER, "wrong again").await.status(),
        401
    );
    let r = console.login(&anon, USER, PASSWORD).await;
    assert_eq!(r.status(), 429, "4 allowed per minute");
    let other = console.client(ip(11));
    // A login form posted without its CSRF token (by a page elsewhere), or with a token that
    // is not this browser's: 403, even with the right password (login CSRF).
    let r = other
        .post(format!("{}/console/login", console.base))
        .form(&[("user", USER), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, page) = console.get(&console.client(ip(12)), "/console/login").await;
    let foreign = Console::csrf(&page);
    let r = other
        .post(format!("{}/console/login", console.base))
        .form(&[
            ("user", USER),
            ("password", PASSWORD),
            ("csrf", foreign.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, _) = console.get(&other, "/console/messages").await;
    assert_eq!(status, 303, "no session came of either");
    let r = console.login(&other, "anyone", TOKEN).await;
    assert_eq!(r.status(), 303, "the admin token logs in too");
    let (status, page) = console.get(&other, "/console/messages").await;
    assert_eq!(status, 200);
    assert!(page.contains("api-token"), "the session's user is named");

    // Logout needs the CSRF token and ends the session.
    let (_, page) = console.get(&other, "/console/messages").await;
    let csrf = Console::csrf(&page);
    let r = other
        .post(format!("{}/console/logout", console.base))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (status, _) = console.get(&other, "/console/messages").await;
    assert_eq!(status, 303, "logged out");
    console.stop().await;
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_are_refused() {
    let console = Console::start(ip(20), |_| {}).await;
    let alice = console.client(ip(20));
    assert_eq!(console.login(&alice, USER, PASSWORD).await.status(), 303);
    let (_, page) = console.get(&alice, "/console/suppressions").await;
    let csrf = Console::csrf(&page);
    // Another session's token.
    let bob = console.client(ip(21));
    assert_eq!(console.login(&bob, "x", TOKEN).await.status(), 303);
    let (_, page) = console.get(&bob, "/console/suppressions").await;
    let other = Console::csrf(&page);
    assert_ne!(csrf, other);
    let add = |token: Option<&str>| {
        let mut form = vec![("recipient", "bob@example.org"), ("scope", "*")];
        if let Some(t) = token {
            form.push(("csrf", t));
        }
        alice
            .post(format!("{}/console/suppressions/add", console.base))
            .form(&form)
            .send()
    };
    let r = add(None).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CSRF"));
    assert_eq!(add(Some(&other)).await.unwrap().status(), 403);
    assert_eq!(add(Some("")).await.unwrap().status(), 403);
    let (_, page) = console.get(&alice, "/console/suppressions").await;
    assert!(!page.contains("bob@example.org"), "nothing was added");
    let r = add(Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("bob@example.org suppressed"));
    // An oversized form is refused before it is read.
    let big = "x".repeat(20_000);
    let r = alice
        .post(format!("{}/console/suppressions/add", console.base))
        .form(&[("csrf", csrf.as_str()), ("reason", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    console.stop().await;
}

/// Payloads an attacker can put in mail: a script element, an attribute breakout, a
/// `javascript:` URL.
const SCRIPT: &str = "<script>alert(1)</script>";
const ATTRIBUTE: &str = "\"><img src=x onerror=alert(2)>";
const URL: &str = "javascript:alert(3)";

#[tokio::test]
async fn mail_data_is_shown_as_text() {
    let console = Console::start(ip(30), |_| {}).await;
    let t = now();
    let host = format!("{ATTRIBUTE}.example.com");
    let sender = format!("{URL}@example.com");
    let rcpt = format!("{SCRIPT}@example.org");
    let subject = format!("{SCRIPT} {ATTRIBUTE} {URL}");
    let reply = format!("550 5.1.1 {SCRIPT} {ATTRIBUTE}");
    console
        .record(
            vec![
                queued("01XSS", t, &host, &sender, &[&rcpt], &subject),
                attempt("01XSS", t + 1, &rcpt, Outcome::Bounced, 550, &reply),
            ],
            "01XSS",
        )
        .await;
    let c = console.client(ip(30));
    assert_eq!(console.login(&c, USER, PASSWORD).await.status(), 303);
    let search = format!(
        "/console/messages?host={}",
        form_urlencoded::byte_serialize(host.as_bytes()).collect::<String>()
    );
    for path in [
        "/console/messages",
        "/console/messages/01XSS",
        search.as_str(),
    ] {
        let (status, page) = console.get(&c, path).await;
        assert_eq!(status, 200, "{path}");
        for raw in ["<script>alert", "<img src=x", "href=\"javascript:"] {
            assert!(!page.contains(raw), "{path}: raw {raw:?} in\n{page}");
        }
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
        assert!(
            page.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
            "{path}"
        );
    }
    let (_, page) = console.get(&c, "/console/messages/01XSS").await;
    assert!(
        page.contains("javascript:alert(3)@example.com"),
        "the sender, as text"
    );
    assert!(
        page.contains("550 5.1.1 &lt;script&gt;"),
        "the remote reply, as text"
    );
    assert!(page.contains("bounced"));
    console.stop().await;
}

#[tokio::test]
async fn search_pages_with_the_cursor_and_shows_the_timeline() {
    let console = Console::start(ip(40), |_| {}).await;
    let t = now() - 60_000;
    let mut events = Vec::new();
    for i in 0..60u64 {
        let id = format!("01PAGE{i:03}");
        let host = if i % 2 == 0 {
            "web1.example.com"
        } else {
            "web2.example.com"
        };
        events.push(queued(
            &id,
            t + i,
            host,
            "app@example.com",
            &["bob@example.org"],
            &format!("Report {i}"),
        ));
    }
    events.push(attempt(
        "01PAGE059",
        t + 100,
        "bob@example.org",
        Outcome::Deferred,
        451,
        "451 4.7.1 try later",
    ));
    events.push(attempt(
        "01PAGE059",
        t + 200,
        "bob@example.org",
        Outcome::Sent,
        250,
        "250 2.0.0 ok queued as X1",
    ));
    console.record(events, "01PAGE059").await;
    let c = console.client(ip(40));
    assert_eq!(console.login(&c, USER, PASSWORD).await.status(), 303);
    // web2 has 30 messages: a page of 20, then the rest through the cursor.
    let (status, page) = console
        .get(
            &c,
            "/console/messages?host=web2.example.com&limit=20&status=",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page.matches("<tr>").count() - 1, 20, "a page of 20 rows");
    assert!(
        page.contains("01PAGE059") && !page.contains("01PAGE058"),
        "web2 only, newest first"
    );
    let next = page
        .split("href=\"/console/messages?")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|s| s.replace("&amp;", "&"));
    let next = next.expect("a link to the next page");
    assert!(next.contains("cursor="), "{next}");
    let (_, second) = console.get(&c, &format!("/console/messages?{next}")).await;
    assert_eq!(second.matches("<tr>").count() - 1, 10, "the other 10");
    assert!(second.contains("01PAGE001") && !second.contains("01PAGE059"));
    assert!(!second.contains("Older messages"), "the last page");
    // Bad input is named.
    let (status, page) = console.get(&c, "/console/messages?status=lost").await;
    assert_eq!(status, 400);
    assert!(page.contains("status"));
    let (status, _) = console.get(&c, "/console/messages?from=yesterday").await;
    assert_eq!(status, 400);
    // The timeline: both attempts with their replies, the final status.
    let (status, page) = console.get(&c, "/console/messages/01PAGE059").await;
    assert_eq!(status, 200);
    for want in [
        "Report 59",
        "451 4.7.1 try later",
        "250 2.0.0 ok queued as X1",
        "web2.example.com",
        "mx.example.org",
    ] {
        assert!(page.contains(want), "{want}");
    }
    let (status, _) = console.get(&c, "/console/messages/01NOPE").await;
    assert_eq!(status, 404);
    console.stop().await;
}

#[test]
fn console_hash_makes_a_hash_that_logs_in() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .arg("console-hash")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(postoffice::console::auth::verify_password(
        hash,
        "a long enough password"
    ));
    assert!(!postoffice::console::auth::verify_password(
        hash,
        "a long enough password\n"
    ));
}

#[tokio::test]
async fn the_queued_copy_shows_headers_and_the_body_only_when_allowed() {
    use hedwig_queue::tubes::TUBE_OUTBOUND;
    for (last, bodies) in [(50u8, false), (51, true)] {
        let console = Console::start(ip(last), |c| c.console.show_bodies = bodies).await;
        let job = crate::common::failed_record(
            "01QUEUED",
            "web1.example.com",
            &["bob@example.org"],
            451,
            "4.7.1",
            hedwig_core::unix_now(),
        );
        crate::common::put(&console.beanstalkd.url(), TUBE_OUTBOUND, &job).await;
        let c = console.client(ip(last));
        assert_eq!(console.login(&c, USER, PASSWORD).await.status(), 303);
        let (status, page) = console.get(&c, "/console/messages/01QUEUED/queue").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("Subject: test 01QUEUED"),
            "the headers: {page}"
        );
        assert!(page.contains("hedwig ("), "the tube: {page}");
        assert_eq!(
            page.contains("body of 01QUEUED"),
            bodies,
            "show_bodies: {bodies}"
        );
        let (_, page) = console.get(&c, "/console/messages/01NOWHERE/queue").await;
        assert!(page.contains("Not in any tube now"));
        console.stop().await;
    }
}

#[tokio::test]
async fn webhooks_page_lists_endpoints_and_retries_deliveries() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "webhook-secret-0123456789abcdef\n").unwrap();
    // Nothing listens there: every delivery fails and waits for its next try.
    let closed = format!(
        "http://127.0.150.56:{}/hook",
        hedwig_testkit::net::free_port(ip(56))
    );
    let hook: postoffice::webhooks::WebhookConfig = serde_json::from_value(serde_json::json!({
        "name": "crm", "url": closed, "secret_file": secret.path(), "events": ["queued"],
        "timeout": "1s", "backoff": "1h", "max_backoff": "1h"
    }))
    .unwrap();
    let console = Console::start(ip(55), |c| c.webhooks = vec![hook]).await;
    console
        .record(
            vec![queued(
                "01HOOK",
                now(),
                "web1.example.com",
                "app@example.com",
                &["bob@example.org"],
                "Hi",
            )],
            "01HOOK",
        )
        .await;
    let c = console.client(ip(55));
    assert_eq!(console.login(&c, USER, PASSWORD).await.status(), 303);
    let tried = crate::console_support::until(std::time::Duration::from_secs(15), || async {
        let (_, page) = console.get(&c, "/console/webhooks?status=pending").await;
        page.contains("01HOOK") && page.contains("<td class=\"num\">1</td>")
    })
    .await;
    assert!(tried, "the delivery was tried once and waits");
    let (status, page) = console.get(&c, "/console/webhooks?endpoint=crm").await;
    assert_eq!(status, 200);
    assert!(page.contains("crm") && page.contains("queued") && page.contains("Retry failed now"));
    let (status, _) = console.get(&c, "/console/webhooks?status=lost").await;
    assert_eq!(status, 400);
    let csrf = Console::csrf(&page);
    let r = c
        .post(format!("{}/console/webhooks/retry", console.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("endpoint", "crm"),
            ("status", "pending"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("1 pending deliveries of crm made due now"));
    let r = c
        .post(format!("{}/console/webhooks/retry", console.base))
        .form(&[("endpoint", "crm"), ("status", "pending")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no CSRF token");
    console.stop().await;
}

/// The DNS page: `keygen dns`'s checks against a real (in-process) DNS server, for the DKIM
/// key of a worker config file: the records that are right are OK, the missing DMARC record
/// is shown with the line to publish, and "check again" (a CSRF-checked POST) sees a record
/// published since.
#[tokio::test]
async fn the_dns_page_shows_each_check_and_the_record_to_publish() {
    let fixture = DnsFixture::start(ip(30)).await;
    let config = fixture.config();
    let console = Console::start(ip(31), move |c| c.console.dns = Some(config)).await;
    let c = console.client(ip(31));
    assert_eq!(console.login(&c, USER, PASSWORD).await.status(), 303);
    let (status, page) = console.get(&c, "/console/dns").await;
    assert_eq!(status, 200, "{page}");
    let row = |page: &str, check: &str| -> String {
        let at = page
            .find(&format!("<td>{check}</td>"))
            .unwrap_or_else(|| panic!("no {check} row in {page}"));
        page[at..at + page[at..].find("</tr>").unwrap()].to_owned()
    };
    for check in ["MX", "SPF", "DKIM", "PTR"] {
        assert!(
            row(&page, check).contains("badge ok"),
            "{check}: {}",
            row(&page, check)
        );
    }
    let dmarc = row(&page, "DMARC");
    assert!(dmarc.contains("badge bad"), "{dmarc}");
    assert!(
        dmarc.contains("<code class=\"record\">_dmarc.send.example.test."),
        "the record to publish: {dmarc}"
    );
    // Published now; the page keeps its report until asked to check again.
    fixture.publish_dmarc();
    let (_, cached) = console.get(&c, "/console/dns").await;
    assert!(
        row(&cached, "DMARC").contains("badge bad"),
        "kept for console.dns.cache"
    );
    let forged = c
        .post(format!("{}/console/dns", console.base))
        .form(&[("csrf", "not the token")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let csrf = Console::csrf(&cached);
    let r = c
        .post(format!("{}/console/dns", console.base))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fresh = r.text().await.unwrap();
    assert!(
        row(&fresh, "DMARC").contains("badge ok"),
        "{}",
        row(&fresh, "DMARC")
    );
    assert!(fresh.contains("every required record is right"), "{fresh}");
    drop(fixture);
    console.stop().await;
}
