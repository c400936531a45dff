//! The SMTP receiver driven by a real client, swaks: plain, STARTTLS and pipelining.

use std::time::Duration;

use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};

/// Runs swaks against `receiver` with `extra` arguments; returns (exit ok, transcript).
async fn swaks(receiver: &SmtpReceiver, extra: &[&str]) -> (bool, String) {
    let server = receiver.addr().to_string();
    let mut command = tokio::process::Command::new("/usr/bin/swaks");
    command
        .args(["--server", &server, "--helo", "client.test"])
        .args(["--from", "sender@origin.test"])
        .args(["--timeout", "10"])
        .args(extra)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("swaks finishes within 20 s")
        .expect("swaks runs");
    let transcript = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), transcript)
}

#[tokio::test]
async fn plain_delivery_is_recorded_byte_exact() {
    let mx = SmtpReceiver::start("127.0.0.2:0".parse().unwrap(), Behaviour::new())
        .await
        .unwrap();
    let (ok, transcript) = swaks(
        &mx,
        &[
            "--to",
            "rcpt@dest.test",
            "--header",
            "Subject: hello",
            "--body",
            "line one\n.dot line\nlast",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let got = mx
        .wait_for(1, Duration::from_secs(5))
        .await
        .expect("1 message");
    let m = &got[0];
    assert_eq!(m.mail_from, "sender@origin.test");
    assert_eq!(m.rcpt_to, ["rcpt@dest.test"]);
    assert_eq!(m.helo, "client.test");
    assert!(!m.tls);
    assert_eq!(m.peer.ip().to_string(), "127.0.0.1");
    let data = String::from_utf8(m.data.clone()).unwrap();
    assert!(data.contains("Subject: hello\r\n"), "{data}");
    // swaks dot-stuffs, the receiver unstuffs, CRLF line ends are kept.
    assert!(
        data.contains("\r\nline one\r\n.dot line\r\nlast\r\n"),
        "{data:?}"
    );
    assert!(data.ends_with("\r\n"));
    assert_eq!(mx.connections(), 1);
}

#[tokio::test]
async fn starttls_delivery_is_marked_tls() {
    let mx = SmtpReceiver::start("127.0.0.3:0".parse().unwrap(), Behaviour::new().starttls())
        .await
        .unwrap();
    let (ok, transcript) = swaks(&mx, &["--to", "rcpt@dest.test", "--tls"]).await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("STARTTLS"), "{transcript}");
    let got = mx
        .wait_for(1, Duration::from_secs(5))
        .await
        .expect("1 message");
    assert!(got[0].tls);
    assert_eq!(got[0].helo, "client.test");
    // The client said EHLO twice: before and after STARTTLS (RFC 3207 §4.2).
    let ehlos = mx
        .commands()
        .iter()
        .filter(|c| c.starts_with("EHLO"))
        .count();
    assert_eq!(ehlos, 2);
}

#[tokio::test]
async fn swaks_tls_fails_when_starttls_is_not_offered() {
    let mx = SmtpReceiver::start("127.0.0.3:0".parse().unwrap(), Behaviour::new())
        .await
        .unwrap();
    let (ok, transcript) = swaks(&mx, &["--to", "rcpt@dest.test", "--tls"]).await;
    assert!(!ok, "{transcript}");
    assert!(mx.received().is_empty());
}

#[tokio::test]
async fn pipelined_transaction_with_a_rejected_recipient() {
    let mx = SmtpReceiver::start(
        "127.0.0.4:0".parse().unwrap(),
        Behaviour::new().rcpt("bad@dest.test", "550 5.1.1 no such user"),
    )
    .await
    .unwrap();
    let (_, transcript) = swaks(
        &mx,
        &[
            "--to",
            "good@dest.test,bad@dest.test,other@dest.test",
            "--pipeline",
        ],
    )
    .await;
    assert!(
        transcript.contains("550 5.1.1 no such user"),
        "{transcript}"
    );
    let got = mx
        .wait_for(1, Duration::from_secs(5))
        .await
        .expect("1 message");
    assert_eq!(got[0].rcpt_to, ["good@dest.test", "other@dest.test"]);
}

#[tokio::test]
async fn port_25_on_a_second_loopback_address() {
    let mx = SmtpReceiver::start("127.0.0.77:25".parse().unwrap(), Behaviour::new())
        .await
        .expect("root may bind 127.0.0.77:25");
    let (ok, transcript) = swaks(&mx, &["--to", "rcpt@dest.test"]).await;
    assert!(ok, "{transcript}");
    assert_eq!(
        mx.wait_for(1, Duration::from_secs(5)).await.unwrap().len(),
        1
    );
}
