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
