//! Issue 11, F3: nobody without a key can lock the post office out. Thousands of idle and
//! half-sent connections and a thousand slow key-less bodies, from other client addresses,
//! against the real binary; a post signed as mailman signs it is still answered within a
//! second, the server's memory stays bounded, and the idle connections are closed.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{email, HOST, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The post office and its log (warnings and errors), for a failure's message.
struct Process(Child, tempfile::NamedTempFile);

impl Process {
    /// Why the process is not there: its exit status and the end of its log.
    fn gone(&mut self) -> String {
        let status = self.0.try_wait().ok().flatten();
        let log = std::fs::read_to_string(self.1.path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!(
            "postoffice exited ({status:?}); last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kib(po: &mut Process, field: &str) -> u64 {
    let pid = po.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}; {}", po.gone()));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The value of `name` in the post office's `/metrics` (0 when absent).
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection to `to` from the source address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    // Generous: on a loaded machine the server may accept slowly (SYN retransmits).
    tokio::time::timeout(Duration::from_secs(15), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// The real binary on `addr`, with `extra` settings; waits for `/health`.
async fn start(addr: SocketAddr, beanstalkd: &str, extra: &[(&str, &str)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_postoffice"));
    command
        .env_clear()
        .env("HEDWIG_LEDGER__WRITER", "false")
        .env("HEDWIG_LISTEN", addr.to_string())
        .env("HEDWIG_BEANSTALKD", beanstalkd)
        .env("HEDWIG_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let log = tempfile::NamedTempFile::new().unwrap();
    command.stderr(log.reopen().unwrap());
    for (k, v) in extra {
        command.env(k, v);
    }
    let po = Process(command.spawn().unwrap(), log);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "postoffice did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    po
}

/// One post as mailman sends it: JSON body, signed headers, no key in the body.
pub async fn signed_post(
    http: &reqwest::Client,
    addr: SocketAddr,
    id: &str,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let key = hedwig_core::key::derive_key(SECRET, HOST);
    let body = serde_json::json!({
        "fqdn": HOST,
        "email": email(&["u@example.org"], "Subject: legit\r\n\r\nhi\r\n"),
        "id": id,
    })
    .to_string()
    .into_bytes();
    let mut request = http
        .post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30));
    for (name, value) in
        hedwig_core::signing::sign(&key, HOST, hedwig_core::unix_now(), "POST", "/", &body)
    {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_slow_keyless_bodies_do_not_delay_a_signed_post() {
    // This process holds 4,000 client sockets: lift a soft limit of 1,024 (as CI shells have).
    let fds = postoffice::server::raise_fd_limit().unwrap();
    assert!(
        fds >= 4500,
        "descriptor hard limit {fds} is too low for this test"
    );
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    // A free port, not a fixed one: another checkout's tests may run at the same time.
    let ip = Ipv4Addr::new(127, 0, 110, 1);
    let addr = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let mut po = start(
        addr,
        &beanstalkd.url(),
        &[
            ("HEDWIG_HEADER_TIMEOUT", "3s"),
            ("HEDWIG_IDLE_TIMEOUT", "3s"),
            ("HEDWIG_REQUEST_TIMEOUT", "60s"),
        ],
    )
    .await;
    let pid = po.0.id();

    // 3,000 connections from 30 other addresses: two thirds send nothing, one third stop in
    // the middle of the request line or the headers.
    let mut idle = Vec::new();
    let mut failed = Vec::new();
    for i in 0..3000u32 {
        let from = Ipv4Addr::new(127, 0, 110, 10 + (i % 30) as u8);
        let mut stream = match connect_from(from, addr).await {
            Ok(stream) => stream,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        if i % 3 == 0 {
            let _ = stream
                .write_all(b"POST / HTTP/1.1\r\nHost: po\r\nX-Pad")
                .await;
        }
        idle.push(stream);
    }
    failed.dedup();
    assert!(
        idle.len() >= 2900,
        "only {} idle connections; connect errors: {failed:?}",
        idle.len()
    );

    // 1,024 slow bodies without a key: headers announce 10 MB; the first 256 send 1 MiB at
    // once, then every body stalls.
    let megabyte = vec![b'a'; 1 << 20];
    let mut slow = Vec::new();
    for i in 0..1024u32 {
        let from = Ipv4Addr::new(127, 0, 111, 1 + (i % 16) as u8);
        let Ok(mut stream) = connect_from(from, addr).await else {
            continue;
        };
        let head =
            "POST / HTTP/1.1\r\nHost: po\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                    Content-Length: 10000000\r\n\r\nfqdn=web1.example.com&email=";
        if stream.write_all(head.as_bytes()).await.is_ok() && i < 256 {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&megabyte)).await;
        }
        slow.push(stream);
    }
    let attack_fds = open_fds(pid);

    // The legitimate host, from its own address.
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 112, 1]))
        .build()
        .unwrap();
    for n in 0..3 {
        let started = Instant::now();
        let answer = signed_post(&http, addr, &format!("legit-{n}")).await;
        let took = started.elapsed();
        let (status, body) = answer.expect("the post got an answer");
        assert_eq!(status, 200, "{body}");
        eprintln!("signed post {n} under attack: {took:?}");
        assert!(
            // Measured 1-16 ms on an idle machine (printed above); before the fix the post
            // timed out after 30 s. The bound is loose so that a loaded CI machine cannot
            // fail it, and still far from the lock-out.
            took < Duration::from_secs(5),
            "post {n} took {took:?} under attack (server fds {attack_fds})"
        );
    }
    let rss_mib = status_kib(&mut po, "VmHWM:") / 1024;
    assert!(rss_mib < 300, "peak RSS {rss_mib} MiB under attack");

    // The idle and half-sent connections are closed by the server after the header timeout.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut closed = 0;
    for stream in &mut idle {
        let mut buf = [0u8; 512];
        // EOF, a reset, or a last answer before the close: not open any more.
        if tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "idle connections still open");
    let timeouts = metric(
        addr,
        "hedwig_postoffice_connections_closed_total{reason=\"timeout\"}",
    )
    .await;
    assert!(timeouts >= idle.len() as u64, "{timeouts} timeouts counted");
    // The server's descriptors of the idle connections are gone (the slow bodies wait for
    // one of the few unsigned slots, each until request_timeout).
    let fds_after = open_fds(pid);
    assert!(
        fds_after <= slow.len() + 100,
        "{fds_after} descriptors still open (were {attack_fds}; {} slow bodies)",
        slow.len()
    );
    eprintln!(
        "server descriptors: {attack_fds} under attack, {fds_after} after the timeout; \
         peak RSS {rss_mib} MiB"
    );
    drop(slow);
    assert_eq!(
        crate::common::jobs_in(&beanstalkd.url(), hedwig_queue::tubes::TUBE_OUTBOUND)
            .await
            .len(),
        3
    );
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_the_oldest_idle_connection_first() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start();
    // A free port, not a fixed one: another checkout's tests may run at the same time.
    let ip = Ipv4Addr::new(127, 0, 110, 2);
    let addr = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let _po = start(
        addr,
        &beanstalkd.url(),
        &[
            ("HEDWIG_HEADER_TIMEOUT", "60s"),
            ("HEDWIG_MAX_CONNECTIONS", "40"),
            ("HEDWIG_MAX_CONNECTIONS_PER_IP", "10"),
        ],
    )
    .await;
    // Ten idle connections from one address: its cap. The eleventh closes the oldest.
    let noisy = Ipv4Addr::new(127, 0, 113, 1);
    let mut mine = Vec::new();
    for _ in 0..10 {
        mine.push(connect_from(noisy, addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Connections idle for less than a second are never closed for a new one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut eleventh = connect_from(noisy, addr).await.unwrap();
    assert!(
        closed_within(&mut mine[0], Duration::from_secs(2)).await,
        "the oldest connection of the address at its cap was not closed"
    );
    for stream in &mut mine[1..] {
        assert!(!closed_within(stream, Duration::from_millis(50)).await);
    }
    assert!(!closed_within(&mut eleventh, Duration::from_millis(50)).await);

    // Fill the total cap from other addresses; a signed post from yet another one still gets
    // its connection (an idle one is closed for it) and its answer at once.
    let mut others = Vec::new();
    for i in 0..30u8 {
        let from = Ipv4Addr::new(127, 0, 113, 2 + i / 10);
        others.push(connect_from(from, addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 113, 9]))
        .build()
        .unwrap();
    let started = Instant::now();
    let (status, body) = signed_post(&http, addr, "over-the-cap").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut closed = 0;
    for stream in mine[1..]
        .iter_mut()
        .chain(std::iter::once(&mut eleventh))
        .chain(&mut others)
    {
        if closed_within(stream, Duration::from_millis(20)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed for the post");
    let shed = metric(
        addr,
        "hedwig_postoffice_connections_closed_total{reason=\"shed\"}",
    )
    .await;
    assert!(shed >= 2, "{shed} connections counted as shed");
}
