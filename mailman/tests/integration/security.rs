//! Security review (issue 8): mailman is not an open relay. The real `mailman` binary allows
//! only 127.0.0.0/30; clients bound to 127.0.0.9 (outside) get `554` at connect and nothing
//! they send is spooled or forwarded, even pipelined; clients from 127.0.0.2/.3 get `220` and
//! their mail reaches beanstalkd through the real postoffice. The refusal is logged with the
//! client's address, and the host key never appears in the log.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::stack::{self, take_jobs, Postoffice};
use hedwig_testkit::Beanstalkd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to `server` from `source` (bind before connect).
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Everything the server sends until it closes (bounded in time).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server neither answered nor closed: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs swaks from `source`; returns (success, its whole transcript).
async fn swaks(server: SocketAddr, source: &str, subject: &str) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("swaks")
            .args([
                "--server",
                &server.to_string(),
                "--local-interface",
                source,
                "--helo",
                "client.test",
                "--from",
                "app@example.com",
                "--to",
                "someone@example.org",
                "--header",
                &format!("Subject: {subject}"),
                "--timeout",
                "10",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swaks finishes in time")
    .expect("swaks runs");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), transcript)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_networks_may_send() {
    let bs = Beanstalkd::start();
    let po = Postoffice::start(&bs).await;
    let smtp = hedwig_testkit::net::free_addr();
    let http = hedwig_testkit::net::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log_path = dir.path().join("mailman.log");
    let key = stack::key();
    let child = Command::new(env!("CARGO_BIN_EXE_mailman"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HEDWIG_LISTEN", smtp.to_string())
        .env("HEDWIG_HTTP_LISTEN", http.to_string())
        .env("HEDWIG_ALLOWED_NETWORKS", "[127.0.0.0/30]")
        .env("HEDWIG_FQDN", stack::FQDN)
        .env("HEDWIG_KEY", &key)
        .env("HEDWIG_POSTOFFICE", po.url())
        .env("HEDWIG_SPOOL_DIR", spool.display().to_string())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mailman = Process(child);
    let mut up = false;
    for _ in 0..400 {
        if reqwest::get(format!("http://{http}/health"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "mailman did not come up");

    // Outside the allowed range: 554 at connect, then the connection is closed. A client that
    // does not wait for the greeting and pipelines a whole transaction gets nothing more.
    let mut denied = connect_from("127.0.0.9", smtp).await;
    let _ = denied
        .write_all(
            b"EHLO intruder.test\r\nMAIL FROM:<spam@example.com>\r\n\
              RCPT TO:<victim@example.org>\r\nDATA\r\nSubject: relayed?\r\n\r\nspam\r\n.\r\nQUIT\r\n",
        )
        .await;
    let answer = read_all(&mut denied).await;
    assert!(answer.starts_with("554 5.7.1 "), "{answer:?}");
    assert_eq!(
        answer.matches("\r\n").count(),
        1,
        "only the 554 line: {answer:?}"
    );
    // The same with a real client.
    let (ok, transcript) = swaks(smtp, "127.0.0.9", "denied swaks").await;
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("554 5.7.1"), "{transcript}");

    // Inside the range: 220, and the mail goes through.
    let mut allowed = connect_from("127.0.0.3", smtp).await;
    let mut greeting = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), allowed.read(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    let greeting = String::from_utf8_lossy(&greeting[..n]);
    assert!(greeting.starts_with("220 "), "{greeting}");
    drop(allowed);
    let (ok, transcript) = swaks(smtp, "127.0.0.2", "allowed swaks").await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("<-  220 mailman.test"), "{transcript}");

    let jobs = take_jobs(&bs, Duration::from_secs(2)).await;
    assert_eq!(jobs.len(), 1, "only the allowed client's mail was queued");
    let message = String::from_utf8_lossy(&jobs[0].message).into_owned();
    assert!(message.contains("Subject: allowed swaks"), "{message}");
    assert!(message.contains("([127.0.0.2])"), "{message}");
    assert_eq!(common::spooled(&spool), 0, "nothing left in the spool");
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "mailman_connections_denied_total 2"),
        "{metrics}"
    );

    drop(mailman);
    po.stop().await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("outside allowed_networks refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(
        refusals.iter().all(|l| l.contains("client=127.0.0.9:")),
        "{refusals:?}"
    );
    assert!(!log.contains("victim@example.org"), "{log}");
    assert!(!log.contains(&key), "the host key is in the log:\n{log}");
}
