//! The bounce listener (`bounce_listener`, a public SMTP port) against abusive clients, over
//! real sockets to the listener `postoffice::serve` starts: more recipients than
//! `max_recipients`, an overlong VERP token, a client that dribbles its DATA, and one that
//! opens more connections than `max_connections_per_client`. Each is answered with a
//! protocol-level reply and bounded; see docs/threat-model.md §12.
//!
//! Addresses: 127.0.190.1-9.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hedwig_core::verp::VerpKey;
use hedwig_testkit::Beanstalkd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::common::config;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 190, 1);
const VERP_SECRET: &str = "bounce-listener-abuse-secret-0123456789abcdef";
const DOMAIN: &str = "bounces.example.com";

/// Starts a post office whose bounce listener has small bounds; its address.
async fn start(beanstalkd: &Beanstalkd) -> (SocketAddr, CancellationToken) {
    let listen = SocketAddr::from((IP, hedwig_testkit::net::free_port(IP)));
    let mut config = config(beanstalkd);
    config.bounce_listener = Some(postoffice::bounce::BounceListenerConfig {
        listen: Some(listen),
        domains: vec![DOMAIN.into()],
        secret: Some(VERP_SECRET.into()),
        max_recipients: 5,
        max_connections_per_client: 3,
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(1),
        session_timeout: Duration::from_secs(4),
        ..Default::default()
    });
    let intake = tokio::net::TcpListener::bind((IP, 0)).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(postoffice::serve(config, intake, stop.clone()));
    for _ in 0..200 {
        if TcpStream::connect(listen).await.is_ok() {
            return (listen, stop);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no bounce listener on {listen}");
}

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> (Client, String) {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// One reply (the last line of a multi-line one); empty at end of stream.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
                .await
                .expect("a reply within 10 s")
                .unwrap_or(0);
            if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    async fn send(&mut self, line: &str) -> String {
        self.w.write_all(line.as_bytes()).await.unwrap();
        self.w.write_all(b"\r\n").await.unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn abusive_clients_get_protocol_replies_and_bounded_sessions() {
    let beanstalkd = Beanstalkd::start_on(IP);
    let (addr, stop) = start(&beanstalkd).await;
    let key = VerpKey::new(VERP_SECRET);

    // More recipients than max_recipients: the sixth gets 452 (RFC 5321 §4.5.3.1.10).
    let (mut c, greeting) = Client::connect(addr).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(c.send("EHLO mx.example.org").await.starts_with("250 "));
    assert!(c.send("MAIL FROM:<>").await.starts_with("250 "));
    for i in 0..5 {
        let to = key
            .return_path(
                "018F2A3B4C5D0123456789AB",
                &format!("r{i}@example.org"),
                DOMAIN,
            )
            .unwrap();
        let answer = c.send(&format!("RCPT TO:<{to}>")).await;
        assert!(answer.starts_with("250 "), "{i}: {answer}");
    }
    let to = key
        .return_path("018F2A3B4C5D0123456789AB", "r5@example.org", DOMAIN)
        .unwrap();
    let answer = c.send(&format!("RCPT TO:<{to}>")).await;
    assert!(answer.starts_with("452 4.5.3"), "{answer}");

    // The longest return path a worker makes (hedwig_core::verp::MAX_PATH) is taken.
    assert!(c.send("RSET").await.starts_with("250 "));
    assert!(c.send("MAIL FROM:<>").await.starts_with("250 "));
    let longest = (1..300)
        .rev()
        .find_map(|n| {
            key.return_path(
                "018F2A3B4C5D0123456789AB",
                &format!("{}@example.org", "l".repeat(n)),
                DOMAIN,
            )
            .ok()
        })
        .unwrap();
    assert!(
        longest.len() > hedwig_core::verp::MAX_PATH - 8,
        "{}",
        longest.len()
    );
    let answer = c.send(&format!("RCPT TO:<{longest}>")).await;
    assert!(answer.starts_with("250 "), "{answer}");

    // An overlong token: a line past 1,000 octets is refused as such, the session goes on.
    let long = format!("RCPT TO:<bounces+{}@{DOMAIN}>", "a".repeat(5_000));
    let answer = c.send(&long).await;
    assert!(answer.starts_with("500 "), "{answer}");
    // A local part past 64 octets is bad syntax; a forged token that fits is no token of ours.
    let long_local = format!("RCPT TO:<bounces+{}@{DOMAIN}>", "a".repeat(900));
    let answer = c.send(&long_local).await;
    assert!(answer.starts_with("501 "), "{answer}");
    let forged = format!("RCPT TO:<bounces+{}@{DOMAIN}>", "a".repeat(56));
    let answer = c.send(&forged).await;
    assert!(answer.starts_with("550 5.1.1"), "{answer}");
    assert!(c.send("RSET").await.starts_with("250 "));
    assert!(c.send("QUIT").await.starts_with("221 "));

    // A client dribbling its DATA (a byte every 400 ms, each read within data_timeout) is
    // cut with 421: by min_data_rate (its default, 500 octets/s, after the 1 s data_timeout),
    // at the latest at session_timeout.
    let (mut c, _) = Client::connect(addr).await;
    let started = Instant::now();
    c.send("HELO slow.example.org").await;
    c.send("MAIL FROM:<>").await;
    let to = key
        .return_path("018F2A3B4C5D0123456789AB", "r0@example.org", DOMAIN)
        .unwrap();
    c.send(&format!("RCPT TO:<{to}>")).await;
    assert!(c.send("DATA").await.starts_with("354 "));
    let mut cut = String::new();
    for _ in 0..100 {
        if c.w.write_all(b"x").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut line = String::new();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), c.r.read_line(&mut line)).await
        {
            if n > 0 {
                cut = line;
                break;
            }
        }
    }
    if cut.is_empty() {
        cut = c.reply().await;
    }
    assert!(cut.starts_with("421 "), "{cut:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut by the rate or the 4 s session timeout, not later: {:?}",
        started.elapsed()
    );

    // More connections from one address than max_connections_per_client: 421 and closed.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (c, greeting) = Client::connect(addr).await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        open.push(c);
    }
    let (mut extra, greeting) = Client::connect(addr).await;
    assert!(greeting.starts_with("421 "), "{greeting}");
    assert_eq!(extra.reply().await, "", "closed after the 421");
    drop(open);
    stop.cancel();
}
