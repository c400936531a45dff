//! `POST /status` refusals that the end-to-end test (mailman's `status`) does not reach: no
//! ledger here (501), a store that is down (503, within a bounded time), a bad id (400), a
//! revoked host (403), and a wrong body digest (401). Addresses: 127.0.160.x.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

use crate::common::{config, HOST, SECRET};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 160, 30);

async fn start(
    change: impl FnOnce(&mut postoffice::Config),
) -> (SocketAddr, CancellationToken, Beanstalkd) {
    let beanstalkd = Beanstalkd::start_on(IP);
    let mut config = config(&beanstalkd);
    change(&mut config);
    let listener = tokio::net::TcpListener::bind((IP, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(postoffice::serve(config, listener, stop.clone()));
    for _ in 0..200 {
        if reqwest::get(format!("http://{addr}/health"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, stop, beanstalkd)
}

/// A status request for `id`, signed by `host`; the status and the error text.
async fn ask(addr: SocketAddr, host: &str, body: &str, signed_body: &str) -> (u16, String) {
    let key = hedwig_core::key::derive_key(SECRET, host);
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/status"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(20))
        .body(body.to_owned());
    for (k, v) in hedwig_core::signing::sign(
        &key,
        host,
        hedwig_core::unix_now(),
        "POST",
        "/status",
        signed_body.as_bytes(),
    ) {
        request = request.header(k, v);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

fn id(id: &str) -> String {
    serde_json::json!({ "id": id }).to_string()
}

#[tokio::test]
async fn without_a_ledger_or_with_it_down_and_bad_requests() {
    // No ledger here: 501, said plainly.
    let (addr, stop, _bs) = start(|c| c.revoked = vec!["old.example.com".into()]).await;
    let (status, error) = ask(addr, HOST, &id("m-1"), &id("m-1")).await;
    assert_eq!(status, 501, "{error}");
    assert!(error.contains("no delivery ledger"), "{error}");
    // Checked before the ledger is asked: a bad id, a revoked host, a body not signed.
    let long = "x".repeat(postoffice::status::MAX_ID + 1);
    assert_eq!(ask(addr, HOST, &id(&long), &id(&long)).await.0, 400);
    assert_eq!(ask(addr, HOST, &id("a\u{7}b"), &id("a\u{7}b")).await.0, 400);
    assert_eq!(ask(addr, HOST, "{\"ids\":[]}", "{\"ids\":[]}").await.0, 400);
    assert_eq!(ask(addr, HOST, &id("m-2"), &id("m-1")).await.0, 401);
    let (status, error) = ask(addr, "old.example.com", &id("m-1"), &id("m-1")).await;
    assert_eq!(status, 403, "{error}");
    assert!(error.contains("revoked"), "{error}");
    stop.cancel();

    // A store that does not answer (nothing listens on its port): 503 in bounded time,
    // and the post office goes on taking status requests.
    let port = hedwig_testkit::net::free_port(IP);
    let (addr, stop, _bs) = start(|c| {
        c.ledger.url = Some(format!("postgres://hedwig@{IP}:{port}/hedwig"));
    })
    .await;
    for _ in 0..2 {
        let started = Instant::now();
        let (status, error) = ask(addr, HOST, &id("m-1"), &id("m-1")).await;
        assert_eq!(status, 503, "{error}");
        assert!(error.contains("ledger is unavailable"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
    stop.cancel();
}

/// A host that floods `POST /status` gets 429 once its bucket is empty; another host's status
/// requests and the flooding host's own posts are not affected, and the refusals are counted.
#[tokio::test]
async fn a_host_flooding_status_requests_is_limited_alone() {
    let (addr, stop, _bs) = start(|c| c.status_rate_per_minute = 5).await;
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let body = id(&format!("m-{i}"));
            tokio::spawn(async move { ask(addr, HOST, &body, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in flood {
        answers.push(task.await.unwrap());
    }
    // No ledger here, so an admitted request is a 501; the rest are refused before any work.
    let admitted = answers.iter().filter(|(s, _)| *s == 501).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(admitted, 5, "{answers:?}");
    assert_eq!(limited.len(), 35, "{answers:?}");
    assert!(
        limited[0].1.contains("too many status requests"),
        "{}",
        limited[0].1
    );
    // Another host has its own bucket.
    assert_eq!(
        ask(addr, "web2.example.com", &id("m-1"), &id("m-1"))
            .await
            .0,
        501
    );
    // The flooding host still posts mail.
    let key = hedwig_core::key::derive_key(SECRET, HOST);
    let email = crate::common::email(&["bob@example.org"], "Subject: hi\r\n\r\nhello\r\n");
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .form(&[
            ("fqdn", HOST),
            ("key", key.as_str()),
            ("email", email.to_string().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hedwig_postoffice_status_requests_total{status=\"429\"} 35"),
        "{metrics}"
    );
    stop.cancel();
}
