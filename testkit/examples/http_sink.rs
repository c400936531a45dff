//! A counting HTTP/1.1 receiver for `bench/run`'s `webhooks` measurement: it answers every
//! request `200` (keep-alive, bodies read by `Content-Length`) and does nothing else, so the
//! figure is the relay's cost of webhooks, not a receiver's (e2e/webhooks/receiver.py checks
//! signatures in Python, which on 2 cores would measure Python).
//!
//! `http_sink ADDR EXPECTED MAX_SECS` prints `listening` once it accepts, and `requests=N`
//! and exits 0 when EXPECTED requests were answered; exit 1 (printing the count) after
//! `MAX_SECS` without them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Largest request head read (the webhook dispatcher's are far smaller).
const MAX_HEAD: usize = 64 * 1024;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, expected, max_secs] = args.as_slice() else {
        eprintln!("usage: http_sink ADDR EXPECTED MAX_SECS");
        return ExitCode::from(2);
    };
    let (Ok(addr), Ok(expected), Ok(max_secs)) = (
        addr.parse::<SocketAddr>(),
        expected.parse::<usize>(),
        max_secs.parse::<u64>(),
    ) else {
        eprintln!("http_sink: bad arguments {args:?}");
        return ExitCode::from(2);
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http_sink: {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let count = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (c, d) = (count.clone(), done.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (c, d) = (c.clone(), d.clone());
            tokio::spawn(async move {
                let _ = serve(stream, &c, &d, expected).await;
            });
        }
    });
    println!("listening");
    let waited = tokio::time::timeout(Duration::from_secs(max_secs), async {
        while count.load(Ordering::SeqCst) < expected {
            done.notified().await;
        }
    })
    .await;
    println!("requests={}", count.load(Ordering::SeqCst));
    if waited.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One connection: requests one after the other, each answered `200`.
async fn serve(
    mut stream: tokio::net::TcpStream,
    count: &AtomicUsize,
    done: &Notify,
    expected: usize,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // The head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Ok(());
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // The body.
        while buf.len() < end + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..end + length);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await?;
        if count.fetch_add(1, Ordering::SeqCst) + 1 >= expected {
            done.notify_one();
        }
    }
}
