//! Issue 18: the raw form of a post (`POST /raw`: a JSON header line, then the message bytes
//! as they are). Signed (as mailman sends it) and unsigned (key in the header line) posts are
//! queued with the message byte for byte, 8-bit and NUL included; the JSON and form posts of
//! older mailmen still work beside it at `/`; a broken raw body is a 400 that says what is
//! wrong; a raw body whose signature does not cover it, or a signature made for `/`, is a
//! 401.

use hedwig_core::key::derive_key;
use hedwig_core::signing::sign;
use hedwig_core::wire::{RawHeader, RAW_CONTENT_TYPE};

use crate::common::{email, PostOffice, HOST, SECRET};

/// Not UTF-8, with a NUL, a lone LF, quotes and backslashes: nothing JSON could carry as is.
const MESSAGE: &[u8] =
    b"From: a@example.com\r\nSubject: caf\xe9 \"raw\" \\\r\n\r\nline\nbare lf\x00end\r\n.\r\n";

fn header(id: &str, key: Option<String>) -> RawHeader {
    RawHeader {
        fqdn: Some(HOST.into()),
        key,
        mailfrom: "a@example.com".into(),
        rcpttos: vec!["u@example.org".into(), "v@example.org".into()],
        id: Some(id.into()),
        app: None,
        fixups: vec!["date".into()],
    }
}

async fn post(
    po: &PostOffice,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    post_to(po, "raw", headers, body).await
}

async fn post_to(
    po: &PostOffice,
    path: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut request = po
        .http
        .post(format!("{}{path}", po.url()))
        .header("content-type", RAW_CONTENT_TYPE);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn raw_posts_signed_and_unsigned_are_queued_byte_for_byte() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);

    let body = header("raw-signed", None).encode(&[MESSAGE]);
    let signature = sign(&key, HOST, hedwig_core::unix_now(), "POST", "/raw", &body).to_vec();
    let (status, answer) = post(&po, &signature, body).await;
    assert_eq!(status, 200, "{answer}");

    let body = header("raw-unsigned", Some(key.clone())).encode(&[&MESSAGE[..9], &MESSAGE[9..]]);
    let (status, answer) = post(&po, &[], body).await;
    assert_eq!(status, 200, "{answer}");

    // An old mailman's JSON post beside them.
    let (status, answer) = po
        .send(email(&["w@example.org"], "Subject: old\r\n\r\nx\r\n"))
        .await;
    assert_eq!(status, 200, "{answer}");

    let jobs = po.jobs().await;
    assert_eq!(jobs.len(), 3);
    for id in ["raw-signed", "raw-unsigned"] {
        let job = jobs
            .iter()
            .find(|j| j.envelope.message_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no job for {id}"));
        assert_eq!(job.message, MESSAGE, "{id}");
        assert_eq!(job.envelope.mail_from, "a@example.com");
        let rcpts: Vec<String> = job.envelope.rcpt_to.iter().map(|r| r.to_string()).collect();
        assert_eq!(rcpts, ["u@example.org", "v@example.org"]);
        assert_eq!(job.envelope.fixups, ["date"]);
    }
}

#[tokio::test]
async fn broken_raw_posts_are_refused_with_the_reason() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);

    // No header line at all.
    let (status, answer) = post(&po, &[], b"{\"fqdn\":\"web1.example.com\"}".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("no header line"),
        "{answer}"
    );

    // A header line that is not JSON.
    let (status, answer) = post(&po, &[], b"fqdn=web1\nSubject: x\r\n\r\n".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("not valid JSON"),
        "{answer}"
    );

    // No key, unsigned.
    let body = header("raw-nokey", None).encode(&[MESSAGE]);
    let (status, answer) = post(&po, &[], body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("\"key\""),
        "{answer}"
    );

    // Signed, then one byte of the message changed on the way.
    let body = header("raw-changed", None).encode(&[MESSAGE]);
    let signature = sign(&key, HOST, hedwig_core::unix_now(), "POST", "/raw", &body).to_vec();
    let mut changed = body.clone();
    *changed.last_mut().unwrap() = b'X';
    let (status, answer) = post(&po, &signature, changed).await;
    assert_eq!(status, 401, "{answer}");

    // Signed for `/` (another endpoint), posted to `/raw`.
    let signature = sign(&key, HOST, hedwig_core::unix_now(), "POST", "/", &body).to_vec();
    let (status, answer) = post(&po, &signature, body.clone()).await;
    assert_eq!(status, 401, "{answer}");

    assert!(po.jobs().await.is_empty());
}

/// A raw body is read up to the message limit plus room for its header line (1 MiB), not the
/// JSON form's three times the limit plus 64 KiB: nothing in it is escaped. With a 1 MB
/// limit: raw bodies stop at 2,048,576 bytes, JSON ones at 3,065,536.
#[tokio::test]
async fn a_raw_body_is_read_only_up_to_the_message_limit_and_its_header() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = crate::common::config(&beanstalkd);
    config.max_message_size = hedwig_core::config::ByteSize(1_000_000);
    let po = PostOffice::start_with(beanstalkd, config).await;
    let key = derive_key(SECRET, HOST);
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    while message.len() < 2_500_000 {
        message.extend_from_slice(&[b'x'; 998]);
        message.extend_from_slice(b"\r\n");
    }
    let body = header("raw-big", Some(key.clone())).encode(&[&message]);
    let (status, answer) = post(&po, &[], body).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("request body over 2048576 bytes"),
        "{answer}"
    );
    // Within the raw limit, a message over max_message_size is refused for its size.
    let body = header("raw-over", Some(key.clone())).encode(&[&message[..1_500_000]]);
    let (status, answer) = post(&po, &[], body).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        !answer.to_string().contains("request body over"),
        "{answer}"
    );
    // And a message at the limit goes through.
    let body = header("raw-fits", Some(key)).encode(&[&message[..999_000]]);
    let (status, answer) = post(&po, &[], body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(po.jobs().await.len(), 1);
}
