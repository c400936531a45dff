//! The real mail clients, run as child processes with a bounded run time: msmtp (Debian's
//! `/usr/bin/msmtp`), swaks, and PHP's `mail()` through msmtp as its `sendmail_path`.
//!
//! Every client connects from the scenario's client address (`127.0.<net>.9`) so that mailman's
//! `Received:` field can be checked for it, says [`CLIENT_HELO`], and uses no TLS or AUTH.

use std::net::{IpAddr, SocketAddr};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{Stack, CLIENT_HELO, SENDER};

/// Runs `program` with `stdin`, within 30 s; panics with its output unless it exits 0.
pub async fn run(program: &str, args: &[String], stdin: &[u8]) -> Output {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (apt-get install it): {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin)
        .await
        .expect("write the client's stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} finishes within 30 s"))
        .expect("wait for the client");
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// msmtp's options to send through the stack's mailman as [`SENDER`].
pub fn msmtp_options(stack: &Stack) -> Vec<String> {
    msmtp_options_to(stack.mailman_addr(), stack.client_ip())
}

/// msmtp's options to send to `server` from `source` as [`SENDER`], with no config file,
/// otherwise msmtp's defaults (it adds From:, Date: and Message-ID: only when missing).
pub fn msmtp_options_to(server: SocketAddr, source: IpAddr) -> Vec<String> {
    vec![
        "--file=/dev/null".into(),
        format!("--host={}", server.ip()),
        format!("--port={}", server.port()),
        format!("--source-ip={source}"),
        format!("--domain={CLIENT_HELO}"),
        format!("--from={SENDER}"),
        "--auth=off".into(),
        "--tls=off".into(),
    ]
}

/// `msmtp [options] [extra...] < message`.
pub async fn msmtp(stack: &Stack, extra: &[&str], message: &[u8]) -> Output {
    let mut args = msmtp_options(stack);
    args.extend(extra.iter().map(|s| s.to_string()));
    run("/usr/bin/msmtp", &args, message).await
}

/// What a PHP script passes to `mail()`.
pub struct PhpMail<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub headers: &'a str,
}

/// Runs PHP's `mail()` with `sendmail_path` set to `msmtp -t` pointed at the stack's mailman
/// (the line the deploy docs give for php.ini, with the test's host and port), and returns
/// what `mail()` returned.
pub async fn php_mail(stack: &Stack, mail: &PhpMail<'_>) -> bool {
    php_mail_via(&msmtp_options(stack), mail).await
}

/// PHP's `mail()` with `sendmail_path = /usr/bin/msmtp -t <msmtp_options>`.
pub async fn php_mail_via(msmtp_options: &[String], mail: &PhpMail<'_>) -> bool {
    let sendmail = format!("/usr/bin/msmtp -t {}", msmtp_options.join(" "));
    // The arguments travel as JSON on stdin: no shell quoting of the body.
    let script = r#"$p = json_decode(file_get_contents("php://stdin"), true);
$ok = mail($p["to"], $p["subject"], $p["body"], $p["headers"]);
echo var_export($ok, true);"#;
    let input = serde_json::json!({
        "to": mail.to,
        "subject": mail.subject,
        "body": mail.body,
        "headers": mail.headers,
    });
    let args = vec![
        "-n".to_string(),
        "-d".to_string(),
        format!("sendmail_path={sendmail}"),
        "-r".to_string(),
        script.to_string(),
    ];
    let out = run("/usr/bin/php", &args, input.to_string().as_bytes()).await;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "true" => true,
        "false" => false,
        other => panic!(
            "php printed {other:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `swaks` sending `data` (a whole message, `--data -` from stdin) to `to` through the stack's
/// mailman, as [`SENDER`], from the client address.
pub async fn swaks(stack: &Stack, to: &[&str], data: &[u8]) -> Output {
    let args = vec![
        "--server".to_string(),
        stack.mailman_addr().ip().to_string(),
        "--port".to_string(),
        stack.mailman_addr().port().to_string(),
        "--local-interface".to_string(),
        stack.client_ip().to_string(),
        "--helo".to_string(),
        CLIENT_HELO.to_string(),
        "--from".to_string(),
        SENDER.to_string(),
        "--to".to_string(),
        to.join(","),
        "--data".to_string(),
        "-".to_string(),
        "--timeout".to_string(),
        "20".to_string(),
    ];
    run("/usr/bin/swaks", &args, data).await
}
