//! End to end with real clients: msmtp (plain and `-t`), swaks (plain and STARTTLS) and PHP
//! `mail()` through msmtp → mailman → the real postoffice → beanstalkd. Each message becomes
//! exactly one job whose bytes are mailman's `Received:` header plus what the client sent.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::stack::{self, split_received, take_jobs, Postoffice};
use crate::common::Mailman;
use hedwig_testkit::Beanstalkd;
use tokio::io::AsyncWriteExt;

async fn setup(dir: &Path) -> (Beanstalkd, Postoffice, Mailman) {
    let bs = Beanstalkd::start();
    let po = Postoffice::start(&bs).await;
    let mut cfg = common::config(dir, &[po.url()]);
    cfg.key = Some(stack::key());
    cfg.fqdn = stack::FQDN.into();
    let m = Mailman::start(cfg).await;
    (bs, po, m)
}

/// Runs a command with `stdin`, bounded in time; panics with its output if it fails.
async fn run(program: &str, args: &[String], stdin: &[u8]) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("client finishes in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn msmtp_args(m: &Mailman, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--file=/dev/null".into(),
        "--host=127.0.0.1".into(),
        format!("--port={}", m.smtp.port()),
        "--auth=off".into(),
        "--tls=off".into(),
        "--domain=client.test".into(),
        "--from=sender@example.com".into(),
        // send exactly what the application wrote
        "--set-from-header=off".into(),
        "--set-date-header=off".into(),
        "--set-msgid-header=off".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Exactly one job; its message is `Received:` + `expected`.
async fn one_job(bs: &Beanstalkd, expected: &[u8], rcpt: &[&str]) -> hedwig_queue::job::Job {
    let jobs = take_jobs(bs, Duration::from_secs(2)).await;
    assert_eq!(jobs.len(), 1, "exactly one job");
    let job = jobs.into_iter().next().unwrap();
    let (received, rest) = split_received(&job.message);
    assert!(
        received.starts_with("Received: from ") && received.contains("by mailman.test (mailman)"),
        "{received}"
    );
    let message_id = job.envelope.message_id.clone().expect("mailman sent an id");
    assert!(
        received.contains(&format!(" id {message_id}")),
        "{received}"
    );
    assert_eq!(
        String::from_utf8_lossy(&rest),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(rest, expected);
    assert_eq!(job.envelope.host, stack::FQDN);
    assert_eq!(job.envelope.rcpt_to, rcpt);
    job
}

const EIGHT_BIT: &[u8] = b"From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: 8-bit\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Caf\xe9 cr\xe8me \xe0 la fran\xe7aise\r\n.\r\n..two dots\r\nend\r\n";

// The Subject: is an RFC 2047 encoded word: msmtp and swaks do not send SMTPUTF8, and mailman
// refuses raw 8-bit header bytes without it (issue 19, `refuse_bad_headers`).
const UTF8: &str = "From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} \u{65e5}\u{672c}\u{8a9e} \u{1f989}\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_plain_with_an_8bit_body() {
    let dir = tempfile::tempdir().unwrap();
    let (bs, po, m) = setup(dir.path()).await;
    run("msmtp", &msmtp_args(&m, &["rcpt@example.org"]), EIGHT_BIT).await;
    let job = one_job(&bs, EIGHT_BIT, &["rcpt@example.org"]).await;
    assert_eq!(job.envelope.mail_from, "sender@example.com");
    assert!(common::wait_spooled(dir.path(), 0, Duration::from_secs(2)).await);
    m.stop().await;
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_t_with_a_utf8_body_and_bare_lf_input() {
    let dir = tempfile::tempdir().unwrap();
    let (bs, po, m) = setup(dir.path()).await;
    // applications write LF; msmtp sends CRLF; -t takes recipients from the headers
    let lf = UTF8.replace("\r\n", "\n");
    let with_cc = lf.replacen(
        "To: rcpt@example.org\n",
        "To: rcpt@example.org\nCc: other@example.net\n",
        1,
    );
    run("msmtp", &msmtp_args(&m, &["-t"]), with_cc.as_bytes()).await;
    let expected = with_cc.replace('\n', "\r\n");
    one_job(
        &bs,
        expected.as_bytes(),
        &["rcpt@example.org", "other@example.net"],
    )
    .await;
    m.stop().await;
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_plain_and_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let bs = Beanstalkd::start();
    let po = Postoffice::start(&bs).await;
    let certified = rcgen::generate_simple_self_signed(vec!["mailman.test".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let spool = dir.path().join("spool");
    let mut cfg = common::config(&spool, &[po.url()]);
    cfg.key = Some(stack::key());
    cfg.tls_cert = Some(cert);
    cfg.tls_key = Some(key);
    let m = Mailman::start(cfg).await;
    let data = dir.path().join("data.eml");
    // swaks ends the data with CRLF . CRLF itself
    std::fs::write(&data, UTF8.strip_suffix("\r\n").unwrap()).unwrap();
    for tls in [false, true] {
        let mut args = vec![
            "--server".to_string(),
            format!("127.0.0.1:{}", m.smtp.port()),
            "--helo".into(),
            "swaks.test".into(),
            "--from".into(),
            "sender@example.com".into(),
            "--to".into(),
            "rcpt@example.org".into(),
            "--data".into(),
            format!("@{}", data.display()),
            "--timeout".into(),
            "20".into(),
        ];
        if tls {
            args.push("--tls".into());
        }
        run("swaks", &args, b"").await;
        let job = one_job(&bs, UTF8.as_bytes(), &["rcpt@example.org"]).await;
        let (received, _) = split_received(&job.message);
        let proto = if tls { "with ESMTPS" } else { "with ESMTP " };
        assert!(received.contains(proto), "{received}");
        assert!(
            received.contains("from swaks.test ([127.0.0.1])"),
            "{received}"
        );
    }
    m.stop().await;
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_mail_through_msmtp_t() {
    let dir = tempfile::tempdir().unwrap();
    let (bs, po, m) = setup(dir.path()).await;
    let script = r#"$ok = mail("rcpt@example.org", "=?UTF-8?B?" . base64_encode("Grüße") . "?=",
        "Hallo Köln,\n.\nein Punkt oben.\n", "From: sender@example.com\r\nContent-Type: text/plain; charset=utf-8");
        exit($ok ? 0 : 1);"#;
    // first, what PHP hands to its sendmail: captured with cat
    let capture = dir.path().join("php.eml");
    run(
        "php",
        &[
            "-n".into(),
            "-d".into(),
            format!("sendmail_path=\"cat > {}\"", capture.display()),
            "-r".into(),
            script.into(),
        ],
        b"",
    )
    .await;
    let php_wrote = std::fs::read(&capture).unwrap();
    // then through msmtp -t to mailman
    let msmtp = format!("msmtp -t {}", msmtp_args(&m, &[]).join(" "));
    run(
        "php",
        &[
            "-n".into(),
            "-d".into(),
            format!("sendmail_path=\"{msmtp}\""),
            "-r".into(),
            script.into(),
        ],
        b"",
    )
    .await;
    // msmtp turns bare LF into CRLF (PHP mixes both); nothing else changes
    let mut expected = Vec::new();
    for (i, b) in php_wrote.iter().enumerate() {
        if *b == b'\n' && (i == 0 || php_wrote[i - 1] != b'\r') {
            expected.push(b'\r');
        }
        expected.push(*b);
    }
    let job = one_job(&bs, &expected, &["rcpt@example.org"]).await;
    assert!(String::from_utf8_lossy(&job.message).contains("Hallo Köln,\r\n.\r\nein Punkt oben."));
    m.stop().await;
    po.stop().await;
}

/// A 10 MB message with 8-bit bytes goes through whole (base64 on the wire, exact in the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_8bit_message() {
    let dir = tempfile::tempdir().unwrap();
    let (bs, po, m) = setup(dir.path()).await;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let line: Vec<u8> = (0..78u8).map(|i| 0x80 | i).chain(*b"\r\n").collect();
    while body.len() < 10_000_000 {
        body.extend_from_slice(&line);
    }
    let mut c = common::hello(m.smtp).await;
    let reply = c
        .send_mail("sender@example.com", &["rcpt@example.org"], &body)
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    one_job(&bs, &body, &["rcpt@example.org"]).await;
    m.stop().await;
    po.stop().await;
}
