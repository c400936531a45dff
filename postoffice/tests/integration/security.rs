//! Security review (issue 8): no key oracle, no injection through the wire fields, the body
//! limit enforced while the body streams in (with the real binary's memory measured), and no
//! secret or key in the logs. What other files already cover is listed in
//! docs/threat-model.md.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{email, PostOffice, HOST, SECRET};
use hedwig_core::key::derive_key;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one raw request (`Connection: close`) and returns the whole answer.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("answer in time")
        .unwrap();
    reply
}

fn form_request(path: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_urlencoded::to_string(fields).unwrap();
    format!(
        "POST {path} HTTP/1.1\r\nHost: po\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer without its `Date:` line: the only part allowed to differ between two answers.
fn without_date(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test]
async fn every_401_is_byte_identical() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    // A host with its own policy and a revoked host are "known" to the post office: a wrong
    // key for them must look exactly like a wrong key for a name it never heard of.
    config.revoked = vec!["revoked.example.com".into()];
    config.hosts.insert(
        HOST.into(),
        postoffice::config::HostPolicy {
            allowed_sender_domains: vec!["example.com".into()],
            rate_per_minute: 1000,
            rate_burst: None,
            ..Default::default()
        },
    );
    let po = PostOffice::start_with(beanstalkd, config).await;
    let data = email(&["u@example.org"], "x").to_string();
    let right = derive_key(SECRET, HOST);
    let other_secret = derive_key("another-secret-0123456789abcdef", HOST);
    let other_host = derive_key(SECRET, "web2.example.com");
    let mut flipped = right.clone().into_bytes();
    flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let long = format!("{right}00");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown host",
            derive_key(SECRET, "x.example.net"),
            "nobody.example.net",
        ),
        ("known host, key of another secret", other_secret, HOST),
        ("known host, key of another host", other_host, HOST),
        ("known host, last digit wrong", flipped, HOST),
        ("known host, key too long", long, HOST),
        ("known host, key too short", right[..63].to_string(), HOST),
        ("malformed key", "zz-not-hex".into(), HOST),
        ("empty key", String::new(), HOST),
        (
            "revoked host, wrong key",
            right.clone(),
            "revoked.example.com",
        ),
    ];
    let mut answers: Vec<(&str, String)> = Vec::new();
    let mut checks: Vec<(&str, String)> = Vec::new();
    for (what, key, fqdn) in &cases {
        let submit = raw(
            po.addr,
            &form_request("/", &[("fqdn", fqdn), ("key", key), ("email", &data)]),
        )
        .await;
        assert!(
            submit.starts_with(b"HTTP/1.1 401 "),
            "{what}: {}",
            String::from_utf8_lossy(&submit)
        );
        answers.push((what, without_date(&submit)));
        let check = raw(
            po.addr,
            &form_request("/check", &[("fqdn", fqdn), ("key", key)]),
        )
        .await;
        assert!(check.starts_with(b"HTTP/1.1 401 "), "{what} /check");
        checks.push((what, without_date(&check)));
    }
    // The old alias `secret` and a JSON body get the same answer too.
    let alias = raw(
        po.addr,
        &form_request("/", &[("fqdn", HOST), ("secret", "00"), ("email", &data)]),
    )
    .await;
    answers.push(("alias secret=", without_date(&alias)));
    let body = json!({"fqdn": "nobody.example.net", "key": right, "email": email(&["u@example.org"], "x")})
        .to_string();
    let json_request = format!(
        "POST / HTTP/1.1\r\nHost: po\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    answers.push((
        "JSON body",
        without_date(&raw(po.addr, json_request.as_bytes()).await),
    ));
    let (first_what, first) = &answers[0];
    assert!(first.contains("content-length:"), "{first}");
    for (what, answer) in &answers {
        assert_eq!(answer, first, "{what} differs from {first_what}");
    }
    for (what, answer) in &checks {
        assert_eq!(answer, &checks[0].1, "/check: {what} differs");
    }
    // Revocation is only told to a holder of the right key.
    let revoked_key = derive_key(SECRET, "revoked.example.com");
    let (status, _) = po
        .post_form(&[
            ("fqdn", "revoked.example.com"),
            ("key", &revoked_key),
            ("email", &data),
        ])
        .await;
    assert_eq!(status, 403);
    assert_eq!(po.ready_count().await, 0);
}

/// Values of `mailfrom`/`rcpttos` that could end the path or start a new SMTP command.
fn hostile_addresses() -> Vec<String> {
    let mut out = Vec::new();
    for c in ["\r", "\n", "\r\n", "\0"] {
        out.push(format!("a@example.com{c}"));
        out.push(format!("{c}a@example.com"));
        out.push(format!("a{c}b@example.com"));
        out.push(format!("a@exa{c}mple.com"));
        out.push(format!("\"a{c}b\"@example.com"));
        // a non-ASCII local part is sent as written (not rebuilt from parts) by the worker
        out.push(format!("j\u{f6}rg@example.com{c}"));
    }
    for s in [
        "a@example.com\r\nRCPT TO:<victim@example.org>",
        "a@example.com>\r\nRSET",
        "a@example.com\r\nDATA\r\nSubject: injected\r\n\r\nspam\r\n.\r\nQUIT",
        "a>b@example.com",
        "a@example.com> SIZE=1",
        "<a@example.com> NOTIFY=NEVER",
        "a@example.com ORCPT=rfc822;x@example.org",
        "a b@example.com",
        "<a@example.com><victim@example.org>",
    ] {
        out.push(s.to_string());
    }
    out
}

#[tokio::test]
async fn wire_fields_that_could_inject_are_400() {
    let po = PostOffice::start().await;
    let key = derive_key(SECRET, HOST);
    for bad in hostile_addresses() {
        let (status, body) = po
            .send(json!({"mailfrom": bad, "rcpttos": ["u@example.org"], "data": "x"}))
            .await;
        assert_eq!(status, 400, "mailfrom {bad:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("mailfrom"),
            "{body}"
        );
        let (status, body) = po
            .send(json!({"mailfrom": "app@example.com", "rcpttos": ["ok@example.org", bad], "data": "x"}))
            .await;
        assert_eq!(status, 400, "rcpttos {bad:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("rcpttos"),
            "{body}"
        );
    }
    // The null sender spelled with a line break is not the null sender.
    for bad in ["\r\n", "<>\r\n", "\0"] {
        let (status, _) = po
            .send(json!({"mailfrom": bad, "rcpttos": ["u@example.org"], "data": "x"}))
            .await;
        assert_eq!(status, 400, "mailfrom {bad:?}");
    }
    let data = email(&["u@example.org"], "x").to_string();
    for fqdn in [
        format!("{HOST}\r\n"),
        format!("{HOST}\n"),
        format!("{HOST}\r\nX-Injected: yes"),
        format!("{HOST}\0"),
        format!("\r\n{HOST}"),
        "web1 .example.com".to_string(),
    ] {
        // The right key for the name without the junk: refused for the name, not the key.
        let (status, body) = po
            .post_form(&[("fqdn", &fqdn), ("key", &key), ("email", &data)])
            .await;
        assert_eq!(status, 400, "fqdn {fqdn:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("fqdn"),
            "{body}"
        );
    }
    for id in [
        "id\r\nINFO forged line".to_string(),
        "id\n".to_string(),
        "id\0".to_string(),
        "two words".to_string(),
        "x".repeat(postoffice::intake::MAX_MESSAGE_ID + 1),
    ] {
        let (status, body) = po
            .post_form(&[("fqdn", HOST), ("key", &key), ("email", &data), ("id", &id)])
            .await;
        assert_eq!(status, 400, "id {id:?}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with("id"), "{body}");
    }
    assert_eq!(po.ready_count().await, 0, "nothing hostile was queued");

    // What is accepted is stored normalized: the job's envelope holds no byte that could
    // break an SMTP command line or a header, and the message is exactly the client's.
    let (status, body) = po
        .post_form(&[
            ("fqdn", "WEB1.Example.com."),
            ("key", &key),
            (
                "email",
                &json!({"mailfrom": " <app@example.com> ", "rcpttos": ["<u@example.org>", "\"john doe\"@example.org"], "data": "Subject: hi\r\n\r\nbody\r\n"}).to_string(),
            ),
            ("id", "01A2B3C4D5E6F7"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let jobs = po.jobs().await;
    assert_eq!(jobs.len(), 1);
    let env = &jobs[0].envelope;
    assert_eq!(env.host, HOST);
    assert_eq!(env.mail_from, "app@example.com");
    assert_eq!(
        env.rcpt_to,
        vec!["u@example.org", "\"john doe\"@example.org"]
    );
    assert_eq!(env.message_id.as_deref(), Some("01A2B3C4D5E6F7"));
    assert_eq!(jobs[0].message, b"Subject: hi\r\n\r\nbody\r\n");
}

/// The real `postoffice` binary, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peak resident memory of `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Streams a chunked body of up to `max_chunks` × 64 KiB, slowly, and reads the answer at the
/// same time. Returns (answer, bytes written when the answer came, whether sending failed).
async fn stream_chunked(
    addr: std::net::SocketAddr,
    key: &str,
    max_chunks: usize,
) -> (String, u64, bool) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = "POST / HTTP/1.1\r\nHost: po\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    writer.write_all(head.as_bytes()).await.unwrap();
    let (answered_tx, mut answered_rx) = tokio::sync::watch::channel(false);
    let reading = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    answer.extend_from_slice(&buf[..n]);
                    let _ = answered_tx.send(true);
                }
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    // The start of a valid form, so the server cannot refuse it for its first bytes.
    let mut first = format!("fqdn={HOST}&key={key}&email=").into_bytes();
    first.resize(64 * 1024, b'a');
    let filler = vec![b'a'; 64 * 1024];
    let mut sent = 0u64;
    let mut sent_at_answer = None;
    let mut failed = false;
    for i in 0..max_chunks {
        if *answered_rx.borrow_and_update() && sent_at_answer.is_none() {
            sent_at_answer = Some(sent);
        }
        let chunk = if i == 0 { &first } else { &filler };
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        // A server that stopped reading makes the write block (full buffers) or fail.
        match tokio::time::timeout(Duration::from_secs(2), writer.write_all(&frame)).await {
            Ok(Ok(())) => sent += chunk.len() as u64,
            _ => {
                failed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(writer);
    let answer = reading.await.unwrap();
    (answer, sent_at_answer.unwrap_or(sent), failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_is_enforced_while_streaming_and_no_key_is_logged() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    let addr = hedwig_testkit::net::free_addr();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .env_clear()
        .env("HEDWIG_LEDGER__WRITER", "false")
        .env("HEDWIG_LISTEN", addr.to_string())
        .env("HEDWIG_BEANSTALKD", beanstalkd.url())
        .env("HEDWIG_SECRET", SECRET)
        .env("HEDWIG_MAX_MESSAGE_SIZE", "1MB")
        .env("HEDWIG_REQUEST_TIMEOUT", "20s")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap())
        .spawn()
        .unwrap();
    let po = Process(child);
    let pid = po.0.id();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "postoffice did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = derive_key(SECRET, HOST);
    let url = format!("http://{addr}/");
    // One of each answer, so every log path runs: 200, 401, 400.
    let data = email(&["u@example.org"], "x").to_string();
    let post = |fields: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let wrong = derive_key("another-secret-0123456789abcdef", HOST);
    assert_eq!(
        post(vec![
            ("fqdn", HOST.into()),
            ("key", key.clone()),
            ("email", data.clone())
        ])
        .await,
        200
    );
    assert_eq!(
        post(vec![
            ("fqdn", HOST.into()),
            ("key", wrong.clone()),
            ("email", data.clone())
        ])
        .await,
        401
    );
    assert_eq!(
        post(vec![
            ("fqdn", HOST.into()),
            ("key", key.clone()),
            (
                "email",
                json!({"mailfrom": "a@example.com\r\n", "rcpttos": ["u@example.org"], "data": "x"})
                    .to_string()
            ),
        ])
        .await,
        400
    );
    let before = peak_rss_kib(pid);

    // The limit for 1 MB messages is 3 MB + 64 KiB of body; up to 64 MiB are offered, 64 KiB
    // every 2 ms, without a Content-Length.
    let limit: u64 = 3 * 1_000_000 + 64 * 1024;
    let started = Instant::now();
    let (answer, sent_at_answer, send_failed) = stream_chunked(addr, &key, 1024).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    // Answered long before the 64 MiB were sent; what was sent by then is the limit plus
    // what the kernel's socket buffers took while the answer was on its way.
    assert!(
        sent_at_answer < limit + 16 * 1024 * 1024,
        "answered only after {sent_at_answer} bytes"
    );
    assert!(send_failed, "the server kept reading after its 413");
    let after = peak_rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    println!(
        "413 after {sent_at_answer} bytes sent (limit {limit}); sending stopped after {took:?}; \
         peak RSS {before} KiB -> {after} KiB"
    );
    // Still serving.
    assert_eq!(
        post(vec![
            ("fqdn", HOST.into()),
            ("key", key.clone()),
            ("email", data.clone())
        ])
        .await,
        200
    );

    drop(po);
    let logged = std::fs::read_to_string(logs.path()).unwrap();
    assert!(logged.contains("post refused"), "{logged}");
    assert!(logged.contains("message queued"), "{logged}");
    for (what, secret) in [
        ("secret", SECRET),
        ("host key", &key),
        ("wrong key", &wrong),
    ] {
        assert!(
            !logged.contains(secret),
            "the {what} is in the log:\n{logged}"
        );
    }
}
