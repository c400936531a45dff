//! SMTP AUTH end to end (issue 17) with the real clients against mailman: swaks (PLAIN and
//! LOGIN, right and wrong passwords, `auth.require`, STARTTLS then AUTH from an address off
//! the plaintext networks, AUTH not offered in plain text there) and msmtp (`auth on` with
//! STARTTLS). The login arrives at the (stand-in) post office as the message's `app`.
//!
//! Addresses: mailman listens on 127.0.170.2; 127.0.170.1 is the one plaintext network
//! (a "local" client), 127.0.170.3 a client off it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use hedwig_core::wire::AppSource;
use tokio::io::{AsyncWriteExt, BufReader};

use crate::common::{self, Client, Mailman, StandIn};

const SERVER: &str = "127.0.170.2";
const LOCAL: &str = "127.0.170.1";
const REMOTE: &str = "127.0.170.3";

struct Setup {
    _dir: tempfile::TempDir,
    po: StandIn,
    m: Mailman,
    cert: PathBuf,
}

/// The users file: `billing` (lane `transactional`) with password `right`, its line made by
/// `mailman passwd`, and `news` with `news-pw`; mode 0600.
fn users_file(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut passwd = std::process::Command::new(env!("CARGO_BIN_EXE_mailman"))
        .args(["passwd", "billing", "--lane", "transactional"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    passwd.stdin.take().unwrap().write_all(b"right\n").unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success());
    let billing = String::from_utf8(out.stdout).unwrap();
    assert!(
        billing.starts_with("billing:$argon2id$") && billing.ends_with(":transactional\n"),
        "{billing}"
    );
    let path = dir.join("users");
    let news = mailman::auth::hash_password("news-pw").unwrap();
    std::fs::write(&path, format!("# logins\n{billing}news:{news}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

async fn setup(require: bool, max_failures: u32) -> Setup {
    setup_with(require, max_failures, false).await
}

async fn setup_with(require: bool, max_failures: u32, app_header: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let po = StandIn::start(200).await;
    let certified =
        rcgen::generate_simple_self_signed(vec!["mailman.test".to_string(), SERVER.to_string()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let mut cfg = common::config(&dir.path().join("spool"), &[po.url()]);
    cfg.listen = vec![format!("{SERVER}:0")];
    cfg.tls_cert = Some(cert.clone());
    cfg.tls_key = Some(key);
    cfg.app_header = app_header;
    cfg.auth = mailman::config::AuthConfig {
        users_file: Some(users_file(dir.path())),
        require,
        plaintext_networks: vec![format!("{LOCAL}/32").parse().unwrap()],
        max_failures,
        failure_delay: Duration::from_millis(50),
        ..Default::default()
    };
    let m = Mailman::start(cfg).await;
    Setup {
        _dir: dir,
        po,
        m,
        cert,
    }
}

/// Runs a client, bounded in time: whether it succeeded, and its stdout and stderr.
async fn run(program: &str, args: &[String]) -> (bool, String) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut child = child;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: auth\r\n\r\nhi\r\n",
        )
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("client finishes in time")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn swaks(s: &Setup, from: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--server",
        &format!("{SERVER}:{}", s.m.smtp.port()),
        "--local-interface",
        from,
        "--helo",
        "swaks.test",
        "--from",
        "sender@example.com",
        "--to",
        "rcpt@example.org",
        "--timeout",
        "20",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn msmtp(s: &Setup, from: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--file=/dev/null".into(),
        format!("--host={SERVER}"),
        format!("--port={}", s.m.smtp.port()),
        format!("--source-ip={from}"),
        "--domain=client.test".into(),
        "--from=sender@example.com".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push("rcpt@example.org".into());
    args
}

/// The `app` of the `n`th post (waiting, bounded, for it).
async fn app_of_post(po: &StandIn, n: usize) -> Option<hedwig_core::wire::App> {
    assert!(
        po.wait_queued(n + 1, Duration::from_secs(10)).await,
        "post {n} arrives"
    );
    po.posts()[n].app.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_plain_and_login_right_wrong_and_none() {
    let s = setup(false, 5).await;
    let (ok, out) = run(
        "swaks",
        &swaks(
            &s,
            LOCAL,
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                "billing",
                "--auth-password",
                "right",
            ],
        ),
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("250-AUTH PLAIN LOGIN"), "{out}");
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
    let app = app_of_post(&s.po, 0).await.expect("the login is the app");
    assert_eq!(app.name, "billing");
    assert_eq!(app.source, AppSource::Login);
    assert_eq!(app.lane.as_deref(), Some("transactional"));
    let received = s.po.posts()[0].email.clone().into_message().unwrap();
    let received = String::from_utf8_lossy(&received);
    assert!(received.contains("with ESMTPA id"), "{received}");

    let (ok, out) = run(
        "swaks",
        &swaks(
            &s,
            LOCAL,
            &[
                "--auth",
                "LOGIN",
                "--auth-user",
                "news",
                "--auth-password",
                "news-pw",
            ],
        ),
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("334 VXNlcm5hbWU6") && out.contains("334 UGFzc3dvcmQ6"),
        "{out}"
    );
    let app = app_of_post(&s.po, 1).await.expect("the login is the app");
    assert_eq!((app.name.as_str(), app.lane), ("news", None));

    let (ok, out) = run(
        "swaks",
        &swaks(
            &s,
            LOCAL,
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                "billing",
                "--auth-password",
                "wrong",
            ],
        ),
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("535 5.7.8 Authentication credentials invalid"),
        "{out}"
    );

    // a client that sends no AUTH still sends, known by its address only
    let (ok, out) = run("swaks", &swaks(&s, LOCAL, &[])).await;
    assert!(ok, "{out}");
    assert_eq!(app_of_post(&s.po, 2).await, None);
    assert_eq!(s.po.posts().len(), 3, "the refused login sent nothing");
    s.m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_auth_refuses_mail_without_it() {
    let s = setup(true, 5).await;
    let (ok, out) = run("swaks", &swaks(&s, LOCAL, &[])).await;
    assert!(!ok, "{out}");
    assert!(out.contains("530 5.7.0 Authentication required"), "{out}");
    let (ok, out) = run(
        "swaks",
        &swaks(
            &s,
            LOCAL,
            &[
                "--auth",
                "PLAIN",
                "--auth-user",
                "billing",
                "--auth-password",
                "right",
            ],
        ),
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(app_of_post(&s.po, 0).await.unwrap().name, "billing");
    assert_eq!(s.po.posts().len(), 1);
    // app_header is off by default: the name goes to the post office only.
    let data = s.po.posts()[0].email.clone().into_message().unwrap();
    assert!(!String::from_utf8_lossy(&data).contains("X-Hedwig-App"));
    s.m.stop().await;
}

/// With `app_header: true` the login's name is in the message too, after mailman's
/// `Received:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_header_names_the_login_in_the_message() {
    let s = setup_with(false, 5, true).await;
    let login = [
        "--auth",
        "LOGIN",
        "--auth-user",
        "billing",
        "--auth-password",
        "right",
    ];
    let (ok, out) = run("swaks", &swaks(&s, LOCAL, &login)).await;
    assert!(ok, "{out}");
    let (ok, out) = run("swaks", &swaks(&s, LOCAL, &[])).await;
    assert!(ok, "{out}");
    app_of_post(&s.po, 1).await;
    let texts: Vec<String> =
        s.po.posts()
            .iter()
            .map(|p| String::from_utf8_lossy(&p.email.clone().into_message().unwrap()).into_owned())
            .collect();
    let (head, _) = texts[0].split_once("\r\n\r\n").unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    let at = lines
        .iter()
        .position(|l| *l == "X-Hedwig-App: billing")
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        lines[..at].iter().any(|l| l.starts_with("Received: ")),
        "after mailman's Received: {head}"
    );
    // No login, no container: no field.
    assert!(!texts[1].contains("X-Hedwig-App"), "{}", texts[1]);
    s.m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_plaintext_networks_auth_needs_starttls() {
    let s = setup(false, 5).await;
    // not offered in plain text: swaks asked for AUTH finds none
    let auth = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "billing",
        "--auth-password",
        "right",
    ];
    let (ok, out) = run("swaks", &swaks(&s, REMOTE, &auth)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("250-STARTTLS") && !out.contains("AUTH PLAIN"),
        "{out}"
    );
    // and refused when tried anyway
    let mut c = connect_from(REMOTE, s.m.smtp).await;
    assert!(c.cmd("EHLO raw.test").await.starts_with("250"));
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0billing\0right");
    let reply = c.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert_eq!(
        reply,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    // after STARTTLS it is offered and works
    let mut with_tls = auth.to_vec();
    with_tls.push("--tls");
    let (ok, out) = run("swaks", &swaks(&s, REMOTE, &with_tls)).await;
    assert!(ok, "{out}");
    assert!(out.contains("235 2.7.0"), "{out}");
    let app = app_of_post(&s.po, 0).await.unwrap();
    assert_eq!(app.name, "billing");
    let received = s.po.posts()[0].email.clone().into_message().unwrap();
    let received = String::from_utf8_lossy(&received);
    assert!(received.contains("with ESMTPSA id"), "{received}");
    s.m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msmtp_auth_with_starttls_and_without_tls() {
    let s = setup(false, 5).await;
    let trust = format!("--tls-trust-file={}", s.cert.display());
    let tls = [
        "--auth=on",
        "--user=billing",
        "--passwordeval=echo right",
        "--tls=on",
        "--tls-starttls=on",
        trust.as_str(),
    ];
    let (ok, out) = run("msmtp", &msmtp(&s, REMOTE, &tls)).await;
    assert!(ok, "{out}");
    let app = app_of_post(&s.po, 0).await.unwrap();
    assert_eq!(
        (app.name.as_str(), app.source),
        ("billing", AppSource::Login)
    );
    // wrong password: refused
    let wrong = [
        "--auth=on",
        "--user=billing",
        "--passwordeval=echo wrong",
        "--tls=on",
        "--tls-starttls=on",
        trust.as_str(),
    ];
    let (ok, out) = run("msmtp", &msmtp(&s, REMOTE, &wrong)).await;
    assert!(!ok, "{out}");
    assert!(out.contains("535"), "{out}");
    // in plain text off the plaintext networks msmtp finds no AUTH and sends nothing
    // (`auth=plain`: with `auth=on` msmtp itself will not send a password unencrypted)
    let plain = [
        "--auth=plain",
        "--user=billing",
        "--passwordeval=echo right",
        "--tls=off",
    ];
    let (ok, out) = run("msmtp", &msmtp(&s, REMOTE, &plain)).await;
    assert!(!ok, "{out}");
    assert!(out.contains("does not support authentication"), "{out}");
    // on one, in plain text, it logs in
    let (ok, out) = run("msmtp", &msmtp(&s, LOCAL, &plain)).await;
    assert!(ok, "{out}");
    assert_eq!(app_of_post(&s.po, 1).await.unwrap().name, "billing");
    assert_eq!(s.po.posts().len(), 2);
    s.m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_close_the_session_and_block_the_address() {
    let s = setup(false, 2).await;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut c = connect_from(LOCAL, s.m.smtp).await;
    assert!(c.cmd("EHLO raw.test").await.starts_with("250"));
    let reply = c
        .cmd(&format!("AUTH PLAIN {}", b64(b"\0billing\0guess1")))
        .await;
    assert!(reply.starts_with("535 5.7.8"), "{reply}");
    let reply = c
        .cmd(&format!("AUTH PLAIN {}", b64(b"\0billing\0guess2")))
        .await;
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    assert_eq!(c.reply().await, "", "closed after the 421");
    // the address stays blocked, even with the right password
    let mut c = connect_from(LOCAL, s.m.smtp).await;
    assert!(c.cmd("EHLO raw.test").await.starts_with("250"));
    let reply = c
        .cmd(&format!("AUTH PLAIN {}", b64(b"\0billing\0right")))
        .await;
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    let outcomes = |o: &str| format!("mailman_auth_attempts_total{{outcome=\"{o}\"}}");
    assert_eq!(s.m.metric(&outcomes("refused")).await, 1);
    assert_eq!(s.m.metric(&outcomes("blocked")).await, 2);
    assert_eq!(s.m.metric(&outcomes("accepted")).await, 0);
    // another address is not
    let args = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "billing",
        "--auth-password",
        "right",
        "--tls",
    ];
    let (ok, out) = run("swaks", &swaks(&s, REMOTE, &args)).await;
    assert!(ok, "{out}");
    assert_eq!(app_of_post(&s.po, 0).await.unwrap().name, "billing");
    s.m.stop().await;
}

/// A test client whose connection comes from `from`; the greeting is read.
async fn connect_from(from: &str, to: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let stream = tokio::time::timeout(common::STEP, socket.connect(to))
        .await
        .expect("connect timeout")
        .expect("connect");
    let mut c = Client {
        reader: BufReader::new(stream),
    };
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220"), "{greeting}");
    c
}
