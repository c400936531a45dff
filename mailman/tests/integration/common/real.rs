//! The real `mailman` binary for the hardening tests (issue 11): started with `HEDWIG_…`
//! variables, its log in a file, killed on drop; clients bound to a chosen source address.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Variables that turn every header fix-up off (issue 19), for tests that compare the bytes a
/// client sent with what is posted.
pub const FIXUPS_OFF: &[(&str, &str)] = &[
    ("HEDWIG_ADD_MISSING_HEADERS__DATE", "false"),
    ("HEDWIG_ADD_MISSING_HEADERS__MESSAGE_ID", "false"),
    ("HEDWIG_ADD_MISSING_HEADERS__FROM", "false"),
    ("HEDWIG_ADD_MISSING_HEADERS__TO", "false"),
    ("HEDWIG_ADD_MISSING_HEADERS__STRIP_BCC", "false"),
];

/// A running `mailman` process.
pub struct RealMailman {
    child: Child,
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    pub log_path: PathBuf,
    pub spool: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for RealMailman {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealMailman {
    /// Starts mailman listening on `ip` (a free port), talking to `postoffice`, with `fqdn`
    /// `mailman.test`, the end-to-end key, and `extra` variables; waits until `/health` answers.
    pub async fn start(ip: Ipv4Addr, postoffice: &str, extra: &[(&str, &str)]) -> RealMailman {
        let smtp = SocketAddr::new(IpAddr::V4(ip), hedwig_testkit::net::free_port(ip));
        let http = SocketAddr::new(IpAddr::V4(ip), hedwig_testkit::net::free_port(ip));
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let log_path = dir.path().join("mailman.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailman"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HEDWIG_LISTEN", smtp.to_string())
            .env("HEDWIG_HTTP_LISTEN", http.to_string())
            .env("HEDWIG_FQDN", super::stack::FQDN)
            .env("HEDWIG_KEY", super::stack::key())
            .env("HEDWIG_POSTOFFICE", postoffice)
            .env("HEDWIG_SPOOL_DIR", spool.display().to_string())
            .env("HEDWIG_FORWARD_DEADLINE", "3s")
            .env("HEDWIG_RETRY_MIN", "200ms")
            .env("HEDWIG_RETRY_MAX", "1s")
            .env("RUST_LOG", "info");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let m = RealMailman {
            child,
            smtp,
            http,
            log_path,
            spool,
            dir,
        };
        for _ in 0..400 {
            if reqwest::get(format!("http://{http}/health")).await.is_ok() {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("mailman did not come up:\n{}", m.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET /health`: status and body.
    pub async fn health(&self) -> (u16, String) {
        let r = reqwest::get(format!("http://{}/health", self.http))
            .await
            .expect("health answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Stops the process (SIGKILL) and returns its log.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

/// Connects to `server` from `source` (bind before connect).
pub async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Reads until `done` says the text so far is complete, the server closes, or `limit` passes.
pub async fn read_until(
    stream: &mut TcpStream,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if done(&text) {
            return text;
        }
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Everything until the server closes (bounded by `limit`).
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    read_until(stream, limit, |_| false).await
}

/// Writes, ignoring errors (the server may have closed).
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
}
