//! Issue 11, F7: signed posts. A post signed with the host key (hedwig_core::signing, as
//! mailman sends it) is accepted; a replay inside the window queues nothing new, one outside it
//! is refused; a changed body is refused; `require_signed` refuses unsigned posts of an
//! upgraded host while old clients of other hosts keep working (key in the form body,
//! `secret` alias included).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{email, HOST, SECRET};
use hedwig_core::key::derive_key;
use hedwig_core::signing::sign;
use postoffice::config::HostPolicy;
use tokio_util::sync::CancellationToken;

struct Served {
    beanstalkd: hedwig_testkit::Beanstalkd,
    addr: SocketAddr,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

/// The post office in this process, on an address of this file's range.
async fn serve(ip: [u8; 4], edit: impl FnOnce(&mut postoffice::Config)) -> Served {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = crate::common::config(&beanstalkd);
    edit(&mut config);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(postoffice::serve(config, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Served {
        beanstalkd,
        addr,
        http,
        _stop: shutdown.drop_guard(),
    }
}

impl Served {
    async fn jobs(&self) -> usize {
        crate::common::jobs_in(&self.beanstalkd.url(), hedwig_queue::tubes::TUBE_OUTBOUND)
            .await
            .len()
    }

    /// Sends `body` to `/` with `headers`, as given.
    async fn raw(&self, headers: &[(&'static str, String)], body: Vec<u8>) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("http://{}/", self.addr))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// An unsigned post, the key in the form body (old clients).
    async fn unsigned(&self, host: &str, key_field: &str) -> (u16, String) {
        let key = derive_key(SECRET, host);
        let data = email(&["u@example.org"], "x").to_string();
        let response = self
            .http
            .post(format!("http://{}/", self.addr))
            .form(&[("fqdn", host), (key_field, &key), ("email", &data)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

/// A JSON body as mailman sends it (no key) and its signing headers, dated `date`.
fn signed(host: &str, id: &str, date: u64) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::json!({
        "fqdn": host,
        "email": email(&["u@example.org"], "Subject: s\r\n\r\nsigned\r\n"),
        "id": id,
    })
    .to_string()
    .into_bytes();
    let key = derive_key(SECRET, host);
    (sign(&key, host, date, "POST", "/", &body).to_vec(), body)
}

#[tokio::test]
async fn signed_post_is_queued_once_however_often_it_is_replayed() {
    let po = serve([127, 0, 114, 1], |_| {}).await;
    let (headers, body) = signed(HOST, "m-1", hedwig_core::unix_now());
    let (status, first) = po.raw(&headers, body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["duplicate"], false);
    // Seven replays of the captured request, byte for byte, inside the window.
    for _ in 0..7 {
        let (status, answer) = po.raw(&headers, body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["duplicate"], true);
        assert_eq!(answer["id"], first["id"]);
    }
    assert_eq!(po.jobs().await, 1);
}

#[tokio::test]
async fn replay_outside_the_window_and_changed_requests_are_401() {
    let po = serve([127, 0, 114, 2], |_| {}).await;
    let now = hedwig_core::unix_now();
    // Outside the 5-minute window, either way.
    for date in [now - 301, now + 301] {
        let (headers, body) = signed(HOST, "m-old", date);
        let (status, answer) = po.raw(&headers, body).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("x-hedwig-date"), "{answer}");
    }
    // The body changed after signing (another recipient), same headers.
    let (headers, body) = signed(HOST, "m-2", now);
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("u@example.org", "victim@example.org")
        .into_bytes();
    let (status, answer) = po.raw(&headers, tampered).await;
    assert_eq!(status, 401, "{answer}");
    // A signature of another host's key, or for another endpoint.
    let (mut headers, body) = signed(HOST, "m-3", now);
    headers[0].1 = "web2.example.com".into();
    assert_eq!(po.raw(&headers, body.clone()).await.0, 401);
    let key = derive_key(SECRET, HOST);
    let for_check = sign(&key, HOST, now, "POST", "/check", &body).to_vec();
    assert_eq!(po.raw(&for_check, body).await.0, 401);
    // A signed post must carry its message id (the nonce).
    let body = serde_json::json!({"fqdn": HOST, "email": email(&["u@example.org"], "x")})
        .to_string()
        .into_bytes();
    let headers = sign(&key, HOST, now, "POST", "/", &body).to_vec();
    let (status, answer) = po.raw(&headers, body).await;
    assert_eq!(status, 400, "{answer}");
    // Half the headers: malformed, not "unsigned".
    let (headers, body) = signed(HOST, "m-4", now);
    assert_eq!(po.raw(&headers[..3], body).await.0, 400);
    assert_eq!(po.jobs().await, 0);
}

#[tokio::test]
async fn require_signed_refuses_unsigned_posts_of_upgraded_hosts_only() {
    let po = serve([127, 0, 114, 3], |config| {
        config.hosts.insert(
            HOST.into(),
            HostPolicy {
                require_signed: true,
                ..HostPolicy::default()
            },
        );
    })
    .await;
    let (status, answer) = po.unsigned(HOST, "key").await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("require_signed"), "{answer}");
    let (headers, body) = signed(HOST, "m-1", hedwig_core::unix_now());
    assert_eq!(po.raw(&headers, body).await.0, 200);
    // Another host, default policy: old clients keep working, `secret` alias too.
    assert_eq!(po.unsigned("web2.example.com", "key").await.0, 200);
    assert_eq!(po.unsigned("web2.example.com", "secret").await.0, 200);
    let (headers, body) = signed("web2.example.com", "m-2", hedwig_core::unix_now());
    assert_eq!(po.raw(&headers, body).await.0, 200);
    assert_eq!(po.jobs().await, 4);

    // `default_policy.require_signed` applies to every host without an entry.
    let po = serve([127, 0, 114, 4], |config| {
        config.default_policy.require_signed = true;
    })
    .await;
    assert_eq!(po.unsigned("web2.example.com", "secret").await.0, 401);
    let (headers, body) = signed("web2.example.com", "m-3", hedwig_core::unix_now());
    assert_eq!(po.raw(&headers, body).await.0, 200);
    assert_eq!(po.jobs().await, 1);
}

#[tokio::test]
async fn check_endpoint_takes_signed_and_unsigned_requests() {
    let po = serve([127, 0, 114, 5], |_| {}).await;
    let key = derive_key(SECRET, HOST);
    let url = format!("http://{}/check", po.addr);
    let mut request = po.http.post(&url);
    for (name, value) in sign(&key, HOST, hedwig_core::unix_now(), "POST", "/check", b"") {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let wrong = derive_key("another-secret-0123456789abcdef", HOST);
    let mut request = po.http.post(&url);
    for (name, value) in sign(&wrong, HOST, hedwig_core::unix_now(), "POST", "/check", b"") {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 401);
    let response = po
        .http
        .post(&url)
        .form(&[("fqdn", HOST), ("secret", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The weakness F7 is about, on the old protocol: a captured unsigned post (no id) is queued
/// again at every replay; once the host must sign, none is.
#[tokio::test]
async fn captured_unsigned_post_replays_until_the_host_must_sign() {
    let replay_seven_times = |po: Served| async move {
        for _ in 0..7 {
            let _ = po.unsigned(HOST, "key").await;
        }
        po.jobs().await
    };
    let po = serve([127, 0, 114, 6], |_| {}).await;
    assert_eq!(replay_seven_times(po).await, 7);
    let po = serve([127, 0, 114, 7], |config| {
        config.default_policy.require_signed = true;
    })
    .await;
    assert_eq!(replay_seven_times(po).await, 0);
}

/// Replays of a captured post (or mailman's retries after a lost answer) are answered from the
/// duplicate window before the rate limit is charged: they cannot drain the host's limit and
/// lock its real mail out with 429s.
#[tokio::test]
async fn replays_do_not_spend_the_hosts_rate_limit() {
    let po = serve([127, 0, 114, 6], |c| {
        c.default_policy = HostPolicy {
            rate_per_minute: 2,
            ..HostPolicy::default()
        };
    })
    .await;
    let now = hedwig_core::unix_now();
    let (headers, body) = signed(HOST, "r-1", now);
    assert_eq!(po.raw(&headers, body.clone()).await.0, 200);
    for _ in 0..5 {
        let (status, answer) = po.raw(&headers, body.clone()).await;
        assert_eq!(
            status, 200,
            "a replay is a duplicate, not a rate refusal: {answer}"
        );
    }
    // The host's second recipient of the minute still goes through.
    let (headers, body) = signed(HOST, "r-2", now);
    let (status, answer) = po.raw(&headers, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(po.jobs().await, 2);
}
