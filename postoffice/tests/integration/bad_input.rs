//! Bad input gets its 4xx with bounded memory, and the server stays up.

use crate::common;

use std::time::Duration;

use crate::common::{email, PostOffice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes, returns what the server answered (empty if it closed).
async fn raw(po: &PostOffice, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(po.addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

fn post(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

async fn still_up(po: &PostOffice) {
    let (status, body) = po.send(email(&["u@example.org"], "alive")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn malformed_form_and_json() {
    let po = PostOffice::start().await;
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            &b"fqdn=a&key=b&email=%7Bnot json"[..],
        ),
        ("application/x-www-form-urlencoded", b"garbage"),
        ("application/x-www-form-urlencoded", b"%%%%&&&==="),
        ("application/json", b"{\"fqdn\": "),
        ("application/json", b"\xff\xfe\x00"),
        ("application/json", b"[]"),
        ("text/plain", b""),
    ] {
        let reply = raw(&po, &post(ct, body)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{ct} {body:?}: {reply}");
        assert!(reply.contains("\"error\""), "{reply}");
    }
    still_up(&po).await;
}

#[tokio::test]
async fn invalid_utf8_in_fqdn() {
    let po = PostOffice::start().await;
    let data = email(&["u@example.org"], "x").to_string();
    let body = format!(
        "fqdn=%FF%FEweb1.example.com&key=00&email={}",
        form_urlencoded::byte_serialize(data.as_bytes()).collect::<String>()
    );
    let reply = raw(
        &po,
        &post("application/x-www-form-urlencoded", body.as_bytes()),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("fqdn"), "{reply}");
    still_up(&po).await;
}

#[tokio::test]
async fn huge_content_length_is_refused_before_reading() {
    let po = PostOffice::start().await;
    let req = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
               Content-Length: 2147483648\r\n\r\nfqdn=";
    let reply = raw(&po, req.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    still_up(&po).await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_cut_off() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.max_message_size = hedwig_core::config::ByteSize(100_000);
    let po = PostOffice::start_with(beanstalkd, config).await;
    let mut stream = TcpStream::connect(po.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut refused = false;
    // at most 4 MB are offered; the server must answer long before
    for _ in 0..64 {
        let head = format!("{:x}\r\n", chunk.len());
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            refused = true;
            break;
        }
    }
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 413") || refused, "{reply}");
    still_up(&po).await;
}

#[tokio::test]
async fn body_that_stops_midway_times_out() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.request_timeout = Duration::from_millis(300);
    let po = PostOffice::start_with(beanstalkd, config).await;
    let mut stream = TcpStream::connect(po.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfqdn=web1")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // a client that disconnects mid-body costs nothing either
    let mut stream = TcpStream::connect(po.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfqdn=web1")
        .await
        .unwrap();
    drop(stream);
    still_up(&po).await;
    assert_eq!(po.ready_count().await, 1);
}

#[tokio::test]
async fn header_flood_is_refused() {
    let po = PostOffice::start().await;
    let mut req = String::from("POST / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..10_000 {
        req.push_str(&format!("X-Flood-{i}: {}\r\n", "v".repeat(20)));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    let reply = raw(&po, req.as_bytes()).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    // one enormous header line
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(1 << 20)
    );
    let reply = raw(&po, big.as_bytes()).await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    still_up(&po).await;
}

#[tokio::test]
async fn garbage_instead_of_http() {
    let po = PostOffice::start().await;
    let reply = raw(
        &po,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    )
    .await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    let reply = raw(&po, b"EHLO smtp.example.com\r\n").await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    still_up(&po).await;
}
