//! The bounce listener run by the real `postoffice` binary, with real clients: STARTTLS
//! (`bounce_listener.tls`) with swaks `--tls` and `openssl s_client -starttls smtp`, the
//! `min_data_rate` cut of a client dribbling its report, and the listener's metrics on
//! `/metrics` moving for each outcome (docs/bounces.md, docs/threat-model.md §12).
//!
//! Addresses: 127.0.250.1-9.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hedwig_core::verp::VerpKey;
use hedwig_testkit::Beanstalkd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::SECRET;

const VERP_SECRET: &str = "bounce-listener-tls-secret-0123456789abcdef";
const DOMAIN: &str = "bounces.example.com";
const QID: &str = "018F2A3B4C5D0123456789AB";

const DSN: &str = include_str!("../../../message/testdata/reports/postfix-dsn.eml");
const ARF: &str = include_str!("../../../message/testdata/reports/arf.eml");

/// The real binary with a bounce listener; killed on drop.
struct Process {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    intake: SocketAddr,
    bounce: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The value of the sample `name` (with its labels) on `/metrics`; 0 when absent.
    async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(format!("http://{}/metrics", self.intake))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// [`Process::metric`] once it equals `want` (a session is counted just after its socket
    /// closes, so the client may see the end first); bounded, then the value seen.
    async fn metric_settled(&self, name: &str, want: u64) -> u64 {
        let mut seen = 0;
        for _ in 0..100 {
            seen = self.metric(name).await;
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    }
}

/// A self-signed certificate and key for `DOMAIN`, made by openssl, in `dir`.
fn make_cert(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={DOMAIN}")])
        .args(["-addext", &format!("subjectAltName=DNS:{DOMAIN}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// Starts the binary on `ip` with a bounce listener (`tls` or not); waits for both
/// listeners.
async fn start(ip: Ipv4Addr, beanstalkd: &Beanstalkd, tls: bool) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let intake = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let bounce = SocketAddr::from((ip, hedwig_testkit::net::free_port(ip)));
    let tls_section = if tls {
        let (cert, key) = make_cert(dir.path());
        format!("  tls:\n    cert_file: {cert}\n    key_file: {key}\n")
    } else {
        String::new()
    };
    let config = dir.path().join("postoffice.yaml");
    std::fs::write(
        &config,
        format!(
            "bounce_listener:\n  listen: {bounce}\n  domains: [{DOMAIN}]\n  secret: {VERP_SECRET}\n\
             \x20 command_timeout: 10s\n  data_timeout: 1s\n  min_data_rate: 100\n\
             \x20 session_timeout: 120s\n{tls_section}"
        ),
    )
    .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_postoffice"))
        .env_clear()
        .env("HEDWIG_CONFIG", &config)
        .env("HEDWIG_LEDGER__WRITER", "false")
        .env("HEDWIG_LISTEN", intake.to_string())
        .env("HEDWIG_BEANSTALKD", beanstalkd.url())
        .env("HEDWIG_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let po = Process {
        child,
        log,
        intake,
        bounce,
        _dir: dir,
    };
    for _ in 0..400 {
        let health = reqwest::get(format!("http://{intake}/health"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if health && TcpStream::connect(bounce).await.is_ok() {
            return po;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("postoffice did not come up: {}", po.log());
}

/// One reply, all its lines; empty at end of stream.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut all = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .expect("a reply within 10 s")
            .unwrap_or(0);
        all.push_str(&line);
        if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    all
}

/// swaks from `ip` to the listener with `args`, `data` on stdin; exit status and transcript.
async fn swaks(
    ip: Ipv4Addr,
    bounce: SocketAddr,
    to: &str,
    data: &str,
    args: &[&str],
) -> (bool, String) {
    let mut child = tokio::process::Command::new("/usr/bin/swaks")
        .args(["--server", &bounce.ip().to_string()])
        .args(["--port", &bounce.port().to_string()])
        .args(["--local-interface", &ip.to_string()])
        .args(["--helo", "mx.example.org", "--from", "<>", "--to", to])
        .args(["--data", "-", "--timeout", "20"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run swaks (apt-get install swaks)");
    let mut input = child.stdin.take().unwrap();
    let data = data.to_string();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(data.as_bytes()).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("swaks finishes within 30 s")
        .unwrap();
    let _ = writer.await;
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_real_clients_and_the_metrics_of_each_result() {
    let ip = Ipv4Addr::new(127, 0, 250, 1);
    let beanstalkd = Beanstalkd::start_on(ip);
    let po = start(ip, &beanstalkd, true).await;
    let key = VerpKey::new(VERP_SECRET);
    let token = key.return_path(QID, "bob@example.org", DOMAIN).unwrap();
    let metric = |m: &'static str| format!("hedwig_postoffice_{m}");

    // A DSN over STARTTLS (swaks fails when TLS cannot be started): recorded.
    let (ok, transcript) = swaks(ip, po.bounce, &token, DSN, &["--tls"]).await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("STARTTLS"), "{transcript}");
    assert!(transcript.contains("TLS started"), "{transcript}");
    assert!(transcript.contains("250 2.0.0 recorded"), "{transcript}");
    // An ARF complaint over STARTTLS.
    let (ok, transcript) = swaks(ip, po.bounce, &token, ARF, &["--tls"]).await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("250 2.0.0 recorded"), "{transcript}");
    // An auto-reply is no report: 550 5.6.0.
    let (ok, transcript) = swaks(
        ip,
        po.bounce,
        &token,
        "Subject: out of office\r\n\r\nBack Monday\r\n",
        &["--tls"],
    )
    .await;
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("550 5.6.0"), "{transcript}");
    // A forged token is refused at RCPT.
    let forged = format!("bounces+{}@{DOMAIN}", "a".repeat(40));
    let (ok, transcript) = swaks(ip, po.bounce, &forged, DSN, &[]).await;
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("550 5.1.1"), "{transcript}");

    // After the handshake the session starts over (RFC 3207 §4.2): openssl sends EHLO and
    // STARTTLS; a MAIL FROM with no new EHLO is out of sequence, and the EHLO after TLS no
    // longer offers STARTTLS.
    let mut openssl = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-starttls", "smtp", "-connect"])
        .arg(po.bounce.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl");
    let mut stdin = openssl.stdin.take().unwrap();
    let mut stdout = BufReader::new(openssl.stdout.take().unwrap());
    let mut answers = Vec::new();
    for command in ["MAIL FROM:<>", "EHLO mx.example.org", "QUIT"] {
        stdin
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        answers.push(read_reply(&mut stdout).await);
    }
    let _ = openssl.wait().await;
    assert!(answers[0].starts_with("503 "), "{answers:?}");
    assert!(answers[1].starts_with("250"), "{answers:?}");
    assert!(!answers[1].contains("STARTTLS"), "{answers:?}");
    assert!(answers[2].starts_with("221 "), "{answers:?}");

    // A client that asks for STARTTLS and then sends no TLS hello: the handshake fails and
    // the connection is closed.
    let (r, mut w) = TcpStream::connect(po.bounce).await.unwrap().into_split();
    let mut r = BufReader::new(r);
    assert!(read_reply(&mut r).await.starts_with("220 "));
    w.write_all(b"EHLO mx.example.org\r\n").await.unwrap();
    let ehlo = read_reply(&mut r).await;
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    w.write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(read_reply(&mut r).await.starts_with("220 "));
    w.write_all(b"this is no TLS client hello\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut rest),
    )
    .await
    .expect("closed within 10 s");

    // The metrics moved, one for each.
    for (name, want) in [
        ("bounce_messages_total{result=\"bounce_recorded\"}", 1),
        ("bounce_messages_total{result=\"complaint_recorded\"}", 1),
        ("bounce_messages_total{result=\"refused_not_a_report\"}", 1),
        ("bounce_recipients_refused_total", 1),
        ("bounce_starttls_total", 4),
        ("bounce_sessions_total{outcome=\"quit\"}", 5),
        ("bounce_sessions_total{outcome=\"tls_failed\"}", 1),
    ] {
        assert_eq!(
            po.metric_settled(&metric(name), want).await,
            want,
            "{name}\n{}",
            po.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_dribbled_below_min_data_rate_is_cut() {
    let ip = Ipv4Addr::new(127, 0, 250, 2);
    let beanstalkd = Beanstalkd::start_on(ip);
    let po = start(ip, &beanstalkd, false).await;
    let key = VerpKey::new(VERP_SECRET);
    let token = key.return_path(QID, "bob@example.org", DOMAIN).unwrap();
    let (r, mut w) = TcpStream::connect(po.bounce).await.unwrap().into_split();
    let mut r = BufReader::new(r);
    assert!(read_reply(&mut r).await.starts_with("220 "));
    w.write_all(b"EHLO mx.example.org\r\n").await.unwrap();
    let ehlo = read_reply(&mut r).await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    // No tls: configured, no STARTTLS offered.
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    for (command, code) in [
        ("MAIL FROM:<>".to_string(), "250"),
        (format!("RCPT TO:<{token}>"), "250"),
        ("DATA".into(), "354"),
    ] {
        w.write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        let answer = read_reply(&mut r).await;
        assert!(answer.starts_with(code), "{command}: {answer}");
    }
    // Ten octets a second, each read well within data_timeout (1 s), against a
    // min_data_rate of 100 octets/s; bounded (the session_timeout, 120 s, is far off).
    let mut written = 0;
    for b in DSN.bytes().take(600) {
        if w.write_all(&[b]).await.is_err() {
            break;
        }
        written += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut peek = [0u8; 1];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), r.get_mut().peek(&mut peek)).await
        {
            if n > 0 {
                break;
            }
        }
    }
    assert!(written < 600, "not cut after {written} octets");
    let cut = read_reply(&mut r).await;
    assert!(cut.starts_with("421 4.4.2"), "{cut}");
    assert!(
        cut.contains("timeout"),
        "the rate, not session_timeout: {cut}"
    );
    assert_eq!(
        po.metric_settled(
            "hedwig_postoffice_bounce_sessions_total{outcome=\"too_slow\"}",
            1
        )
        .await,
        1,
        "{}",
        po.log()
    );
    assert!(
        po.log().contains("slower than min_data_rate"),
        "{}",
        po.log()
    );
}
