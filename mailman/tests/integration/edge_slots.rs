//! Issue 11 F5, edge slots, against the real `mailman` binary: one client address cannot take
//! every connection (it gets `421 4.7.0` over `max_connections_per_client`; a neighbour still
//! gets `220`), and a client cannot hold a session by dribbling: a command line sent a byte at
//! a time is cut at `command_timeout`, a message slower than `min_data_rate` is cut after
//! `data_timeout`, and any session ends at `session_timeout`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::common::real::{connect_from, read_until, send, RealMailman};
use crate::common::StandIn;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

// one mailman address per test: tests run in parallel and free ports are only probed
const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 101, 1);
const MM_IP_2: Ipv4Addr = Ipv4Addr::new(127, 0, 101, 11);
const MM_IP_3: Ipv4Addr = Ipv4Addr::new(127, 0, 101, 12);
const MM_IP_4: Ipv4Addr = Ipv4Addr::new(127, 0, 101, 13);
const GREEDY: Ipv4Addr = Ipv4Addr::new(127, 0, 101, 2);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 101, 3);

async fn greeting(c: &mut TcpStream) -> String {
    read_until(c, Duration::from_secs(10), |t| t.ends_with("\r\n")).await
}

/// Sends `bytes` one at a time, `every` apart, for at most `limit`, reading what the server
/// says meanwhile. Returns how long until the server closed (None: it never did) and what it
/// said.
async fn dribble(
    c: &mut TcpStream,
    bytes: &[u8],
    every: Duration,
    limit: Duration,
) -> (Option<Duration>, String) {
    let start = Instant::now();
    let mut said = Vec::new();
    let mut buf = [0u8; 1024];
    for &b in bytes.iter().cycle() {
        if start.elapsed() > limit {
            return (None, String::from_utf8_lossy(&said).into_owned());
        }
        send(c, &[b]).await;
        let until = tokio::time::Instant::now() + every;
        loop {
            match tokio::time::timeout_at(until, c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return (
                        Some(start.elapsed()),
                        String::from_utf8_lossy(&said).into_owned(),
                    )
                }
                Ok(Ok(n)) => said.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }
    unreachable!("cycle is endless")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_slot() {
    let po = StandIn::start(200).await;
    let mailman = RealMailman::start(
        MM_IP,
        &po.url(),
        &[
            ("HEDWIG_MAX_CONNECTIONS", "6"),
            ("HEDWIG_MAX_CONNECTIONS_PER_CLIENT", "4"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = connect_from(GREEDY, mailman.smtp).await;
        let g = greeting(&mut c).await;
        assert!(g.starts_with("220 "), "session {i}: {g:?}");
        held.push(c);
    }
    for i in 0..3 {
        let mut c = connect_from(GREEDY, mailman.smtp).await;
        let g = greeting(&mut c).await;
        assert!(
            g.starts_with("421 4.7.0 ") && g.contains("too many connections from your address"),
            "over the cap {i}: {g:?}"
        );
    }
    // the neighbour still gets in, and can send
    let mut n = connect_from(NEIGHBOUR, mailman.smtp).await;
    assert!(greeting(&mut n).await.starts_with("220 "));
    send(
        &mut n,
        b"EHLO n\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
    )
    .await;
    assert!(
        read_until(&mut n, Duration::from_secs(10), |t| t.contains("354 "))
            .await
            .contains("354 ")
    );
    send(&mut n, b"Subject: neighbour\r\n\r\nhi\r\n.\r\nQUIT\r\n").await;
    let r = read_until(&mut n, Duration::from_secs(10), |t| t.contains("221 ")).await;
    assert!(r.starts_with("250 "), "{r:?}");
    assert!(po.wait_queued(1, Duration::from_secs(5)).await);
    // a slot given back is usable again
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut c = connect_from(GREEDY, mailman.smtp).await;
        if greeting(&mut c).await.starts_with("220 ") {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot was never given back");
    let log = mailman.stop();
    // three, and perhaps a retry above that raced the freed slot
    assert!(
        log.matches("max_connections_per_client reached").count() >= 3,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_a_command_line_is_cut_at_command_timeout() {
    let po = StandIn::start(200).await;
    let mailman = RealMailman::start(MM_IP_2, &po.url(), &[("HEDWIG_COMMAND_TIMEOUT", "2s")]).await;
    let mut c = connect_from(GREEDY, mailman.smtp).await;
    assert!(greeting(&mut c).await.starts_with("220 "));
    // One byte every 400 ms, never a whole line: the old per-read timeout never fired.
    let (closed, said) = dribble(
        &mut c,
        b"NOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOP",
        Duration::from_millis(400),
        Duration::from_secs(12),
    )
    .await;
    let closed = closed.unwrap_or_else(|| panic!("still open after 12 s: {said:?}"));
    assert!(closed < Duration::from_secs(4), "{closed:?}");
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_data_is_cut_below_min_data_rate() {
    let po = StandIn::start(200).await;
    // min_data_rate keeps its default (500 octets/s)
    let mailman = RealMailman::start(MM_IP_3, &po.url(), &[("HEDWIG_DATA_TIMEOUT", "2s")]).await;
    let mut c = connect_from(GREEDY, mailman.smtp).await;
    assert!(greeting(&mut c).await.starts_with("220 "));
    send(
        &mut c,
        b"EHLO d\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
    )
    .await;
    assert!(
        read_until(&mut c, Duration::from_secs(10), |t| t.contains("354 "))
            .await
            .contains("354 ")
    );
    let (closed, said) = dribble(
        &mut c,
        b"Subject: slow\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
        Duration::from_millis(300),
        Duration::from_secs(12),
    )
    .await;
    let closed = closed.unwrap_or_else(|| panic!("still open after 12 s: {said:?}"));
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    assert!(said.starts_with("421 4.4.2 "), "{said:?}");
    assert_eq!(po.posts().len(), 0, "nothing forwarded");
    let log = mailman.stop();
    assert!(log.contains("slower than min_data_rate"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_at_session_timeout() {
    let po = StandIn::start(200).await;
    let mailman = RealMailman::start(MM_IP_4, &po.url(), &[("HEDWIG_SESSION_TIMEOUT", "3s")]).await;
    let mut c = connect_from(GREEDY, mailman.smtp).await;
    assert!(greeting(&mut c).await.starts_with("220 "));
    // whole NOOPs, each quickly: only the session deadline ends this
    let (closed, said) = dribble(
        &mut c,
        b"NOOP\r\n",
        Duration::from_millis(100),
        Duration::from_secs(12),
    )
    .await;
    let closed = closed.unwrap_or_else(|| panic!("still open after 12 s"));
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_secs(6),
        "{closed:?}"
    );
    assert!(
        said.contains("421 4.4.2 mailman.test session time limit exceeded"),
        "{said:?}"
    );
}
