//! Issue 11 F14 (mailman's part), against the real `mailman` binary and the real postoffice:
//! while the postoffice refuses the key, `/health` answers 503 (`wrong_key`) and so
//! `mailman health-check` fails; the refusal is logged once per `key_check_interval`, not once
//! per message; when the postoffice starts accepting the key (a secret rotation that lists the
//! old secret), `/health` recovers without a restart and the spooled mail goes out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::real::{connect_from, read_until, send, RealMailman};
use crate::common::stack::{take_jobs, Postoffice};
use hedwig_testkit::Beanstalkd;

const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 104, 1);
const PO_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 104, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 104, 3);
const OTHER_SECRET: &str = "another-secret-that-this-postoffice-does-not-know-0123456789";

fn health_check(mailman: &RealMailman) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailman"))
        .arg("health-check")
        .env_clear()
        .env("HEDWIG_HTTP_LISTEN", mailman.http.to_string())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn send_one(mailman: &RealMailman, n: usize) {
    let mut c = connect_from(CLIENT, mailman.smtp).await;
    send(
        &mut c,
        format!("EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: {n}\r\n\r\nx\r\n.\r\nQUIT\r\n").as_bytes(),
    )
    .await;
    let r = read_until(&mut c, Duration::from_secs(10), |t| t.contains("221 ")).await;
    assert!(r.contains("250 2.0.0 Ok: queued locally"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_makes_health_fail_until_it_is_accepted() {
    let bs = Beanstalkd::start();
    let po_addr = SocketAddr::new(IpAddr::V4(PO_IP), hedwig_testkit::net::free_port(PO_IP));
    let po = Postoffice::start_on(&bs, po_addr).await;
    // a key derived from a secret this postoffice does not know
    let wrong = hedwig_core::key::derive_key(OTHER_SECRET, crate::common::stack::FQDN);
    let started = Instant::now();
    let mailman = RealMailman::start(
        MM_IP,
        &po.url(),
        &[
            ("HEDWIG_KEY", wrong.as_str()),
            ("HEDWIG_KEY_CHECK_INTERVAL", "1s"),
            ("HEDWIG_FORWARD_DEADLINE", "1s"),
            ("HEDWIG_RETRY_MIN", "100ms"),
            ("HEDWIG_RETRY_MAX", "200ms"),
        ],
    )
    .await;
    let mut unhealthy = None;
    for _ in 0..100 {
        let (status, body) = mailman.health().await;
        if status == 503 {
            unhealthy = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = unhealthy.expect("/health turns 503 while the key is refused");
    assert!(body.contains("\"wrong_key\":true"), "{body}");
    let (ok, text) = health_check(&mailman);
    assert!(!ok, "health-check must fail: {text}");
    assert!(text.contains("wrong_key"), "{text}");

    // many messages and their retries all get 401: one log line per interval, not per post
    for n in 0..8 {
        send_one(&mailman, n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused_for = started.elapsed();

    // the postoffice now accepts the old secret too (a rotation): no mailman restart
    po.stop().await;
    let po = Postoffice::start_with(&bs, po_addr, |c| {
        c.previous_secrets = vec![OTHER_SECRET.into()];
    })
    .await;
    let mut recovered = false;
    for _ in 0..100 {
        if mailman.health().await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "/health recovers once the key is accepted");
    assert!(health_check(&mailman).0);
    let mut jobs = Vec::new();
    for _ in 0..10 {
        jobs.extend(take_jobs(&bs, Duration::from_secs(1)).await);
        if jobs.len() >= 8 {
            break;
        }
    }
    assert_eq!(jobs.len(), 8, "the spooled messages went out");
    let log = mailman.stop();
    let lines = log.lines().filter(|l| l.contains("ERROR")).count();
    // and no WARN per retry drowns it
    let retries = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("401"))
        .count();
    assert_eq!(retries, 0, "{log}");
    let max = refused_for.as_secs() as usize + 3;
    assert!(
        (1..=max).contains(&lines),
        "{lines} error lines in {refused_for:?}:\n{log}"
    );
    assert!(log.contains("accepts our key again"), "{log}");
    po.stop().await;
}
