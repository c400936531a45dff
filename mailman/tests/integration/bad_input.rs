//! Bad input over real TCP: every case gets a clear reply, the listener stays up, nothing
//! half-received is spooled or forwarded.

use std::time::Duration;

use crate::common::*;
use tokio::io::AsyncReadExt;

async fn setup() -> (StandIn, tempfile::TempDir, Mailman) {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[po.url()]);
    cfg.command_timeout = Duration::from_millis(500);
    cfg.data_timeout = Duration::from_millis(500);
    cfg.max_message_size = hedwig_core::config::ByteSize(10_000);
    let m = Mailman::start(cfg).await;
    (po, dir, m)
}

/// The listener still takes a whole message.
async fn still_works(m: &Mailman, po: &StandIn) {
    let before = po.queued();
    let mut c = hello(m.smtp).await;
    let reply = c
        .send_mail("a@example.com", &["b@example.org"], b"x\r\n")
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    assert_eq!(po.queued(), before + 1);
}

#[tokio::test]
async fn one_megabyte_command_line() {
    let (po, _dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    let mut line = vec![b'A'; 1 << 20];
    line.extend_from_slice(b"\r\n");
    c.send(&line).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("500 5.5.2"), "{reply}");
    assert!(c.cmd("NOOP").await.starts_with("250"));
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn nul_and_invalid_utf8() {
    let (po, _dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    c.send(b"MAIL FROM:<a\0@b.test>\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    c.send(b"MAIL FROM:<\xc3\x28@b.test>\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    assert!(c.cmd("MAIL FROM:<a@b.test>").await.starts_with("250"));
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn out_of_sequence() {
    let (po, _dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1"));
    assert!(c
        .cmd("RCPT TO:<b@example.org>")
        .await
        .starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<a@example.com>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("554 5.5.1"));
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn ten_thousand_recipients_pipelined() {
    let (po, _dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    let mut batch = b"MAIL FROM:<a@example.com>\r\n".to_vec();
    for i in 0..10_000 {
        batch.extend_from_slice(format!("RCPT TO:<r{i}@example.org>\r\n").as_bytes());
    }
    batch.extend_from_slice(b"DATA\r\n");
    // write and read concurrently: the replies are larger than the socket buffers
    let (mut rd, mut wr) = c.reader.get_mut().split();
    let writer = async {
        tokio::io::AsyncWriteExt::write_all(&mut wr, &batch)
            .await
            .unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while !got.ends_with(b"354 End data with <CR><LF>.<CR><LF>\r\n") {
            assert!(tokio::time::Instant::now() < end, "no 354");
            let n = tokio::time::timeout(STEP, rd.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    let text = String::from_utf8(got).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 10_000 + 1);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("250 2.1.5")).count(),
        100
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("452 4.5.3")).count(),
        9_900
    );
    c.send(b"x\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(po.posts()[0].email.rcpttos.len(), 100);
    m.stop().await;
}

#[tokio::test]
async fn disconnect_mid_data_leaves_nothing() {
    let (po, dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    assert!(c.cmd("MAIL FROM:<a@example.com>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: half\r\n\r\nhalf a message\r\n").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spooled(dir.path()), 0);
    assert!(po.posts().is_empty());
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn stalled_clients_get_421() {
    let (po, dir, m) = setup().await;
    // silent at the command prompt
    let mut c = hello(m.smtp).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert_eq!(c.reply().await, "", "closed after 421");
    // silent in the middle of DATA
    let mut c = hello(m.smtp).await;
    assert!(c.cmd("MAIL FROM:<a@example.com>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: stall\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert_eq!(spooled(dir.path()), 0);
    assert!(po.posts().is_empty());
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn message_of_the_limit_plus_one() {
    let (po, _dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    // 10,000 octets is the limit: 9,998 + CRLF + 1 = 10,001
    let mut body = vec![b'y'; 9_999];
    body.extend_from_slice(b"\r\n");
    let reply = c
        .send_mail("a@example.com", &["b@example.org"], &body)
        .await;
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert!(c
        .cmd("MAIL FROM:<a@example.com> SIZE=10001")
        .await
        .starts_with("552 5.3.4"));
    assert!(po.posts().is_empty());
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn a_thousand_connections_against_a_limit_of_a_hundred() {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[po.url()]);
    cfg.max_connections = 100;
    // all from 127.0.0.1: the global limit is tested here, the per-client one in edge_slots
    cfg.max_connections_per_client = Some(1000);
    let m = Mailman::start(cfg).await;
    let mut clients = Vec::new();
    let mut greetings = Vec::new();
    for _ in 0..1000 {
        let mut c = Client::connect(m.smtp).await;
        greetings.push(c.reply().await);
        clients.push(c);
    }
    let ok = greetings.iter().filter(|g| g.starts_with("220")).count();
    let busy = greetings
        .iter()
        .filter(|g| g.starts_with("421 4.7.0"))
        .count();
    assert_eq!((ok, busy), (100, 900));
    assert_eq!(m.metric("mailman_connections_open").await, 100);
    assert_eq!(m.metric("mailman_connections_over_limit_total").await, 900);
    drop(clients);
    // the slots come back
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.metric("mailman_connections_open").await > 0 {
        assert!(tokio::time::Instant::now() < end);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn port_scanner_garbage_and_tls_hello() {
    let (po, _dir, m) = setup().await;
    // random binary garbage with some newlines
    let mut c = Client::connect(m.smtp).await;
    assert!(c.reply().await.starts_with("220"));
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    c.send(&garbage).await;
    let mut all = Vec::new();
    let _ = tokio::time::timeout(STEP, c.reader.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("421 4.7.0"), "{text}");
    // an HTTP request
    let mut c = Client::connect(m.smtp).await;
    assert!(c.reply().await.starts_with("220"));
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(c.reply().await.starts_with("500"));
    // a TLS ClientHello on the plain port
    let mut c = Client::connect(m.smtp).await;
    assert!(c.reply().await.starts_with("220"));
    c.send(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ])
    .await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    still_works(&m, &po).await;
    m.stop().await;
}

#[tokio::test]
async fn clients_outside_allowed_networks_get_554() {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &[po.url()]);
    cfg.allowed_networks = vec!["127.0.0.2/32".parse().unwrap()];
    let m = Mailman::start(cfg).await;
    let mut c = Client::connect(m.smtp).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    assert_eq!(c.reply().await, "");
    assert_eq!(m.metric("mailman_connections_denied_total").await, 1);
    m.stop().await;
}

#[tokio::test]
async fn shutdown_says_421_to_idle_sessions() {
    let (_po, _dir, m) = setup().await;
    let mut c = hello(m.smtp).await;
    let shutdown = m.shutdown.clone();
    let stopping = tokio::spawn(m.stop());
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    shutdown.cancel();
    stopping.await.unwrap();
}
