//! Smarthost login against a real Postfix (Cyrus SASL, sasldb) as the relay: 587 with
//! STARTTLS + AUTH PLAIN and 465 with TLS from the first byte + AUTH LOGIN deliver (Postfix
//! logs `sasl_username=`); a wrong password defers with the 535 in the reason, counts in the
//! metric and is logged once for several messages; a certificate that does not verify sends
//! no AUTH at all. Postfix relays what it accepts to a testkit receiver; all on 127.0.180.*.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hedwig_testkit::postfix::Postfix;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use tracing::instrument::WithSubscriber;
use worker::config::{LoginTls, RelayAuth};
use worker::login::Mechanism;
use worker::metrics::Counter;
use worker::plan::Status;

const USER: &str = "hedwig";
const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(20);

/// The receiver Postfix relays to, and Postfix itself on `ip`.
async fn smarthost(ip: &str, sink_ip: &str) -> (Postfix, SmtpReceiver) {
    let sink = SmtpReceiver::start(
        format!("{sink_ip}:2525").parse::<SocketAddr>().unwrap(),
        Behaviour::new(),
    )
    .await
    .unwrap();
    let pf = tokio::task::spawn_blocking({
        let (ip, to) = (ip.to_string(), sink.addr());
        move || Postfix::start(&ip, to, USER, PASSWORD)
    })
    .await
    .unwrap()
    .unwrap();
    (pf, sink)
}

/// A config whose DNS and beanstalkd are never asked (the routes are `[ip]:port`).
fn config() -> worker::Config {
    common::config(
        "127.0.180.1:11300",
        "127.0.180.1:53".parse::<SocketAddr>().unwrap(),
    )
}

fn auth(dir: &tempfile::TempDir, password: &str, mechanism: Mechanism) -> RelayAuth {
    let path = dir.path().join("password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    RelayAuth {
        user: USER.into(),
        password_file: path,
        tls: None,
        mechanism: Some(mechanism),
        allow_unverified: false,
    }
}

async fn postfix_log(pf: &Postfix, needle: &str) -> String {
    let needle = needle.to_string();
    let log = tokio::task::block_in_place(|| pf.wait_log(&needle, WAIT));
    log.unwrap_or_else(|log| panic!("{needle:?} not in Postfix's log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_587_starttls_auth_plain_delivers() {
    let (pf, sink) = smarthost("127.0.180.10", "127.0.180.11").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.relayhost = Some("[127.0.180.10]:587".into());
    config.relay_auth = Some(auth(&dir, PASSWORD, Mechanism::Plain));
    config.tls.ca_file = Some(pf.ca_file());
    let d = common::deliverer(config);
    let out = common::deliver(&d, "far.test", &["a@far.test"]).await;
    assert_eq!(
        out[0].1.status,
        Status::Delivered,
        "{:?}\n{}",
        out[0].1,
        pf.log()
    );
    assert_eq!(out[0].1.tls, Some(true));
    assert_eq!(
        out[0].1.relay.as_deref(),
        Some("127.0.180.10[127.0.180.10]:587")
    );
    postfix_log(&pf, "sasl_method=PLAIN, sasl_username=hedwig@").await;
    let got = sink.wait_for(1, WAIT).await.expect("relayed by Postfix");
    assert_eq!(got[0].rcpt_to, ["a@far.test"]);
    assert_eq!(d.metrics.get(Counter::AuthFailure), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_465_wrapper_auth_login_delivers_for_a_transport() {
    let (pf, sink) = smarthost("127.0.180.12", "127.0.180.13").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config
        .transports
        .insert("login.test".into(), "[127.0.180.12]:465".into());
    config
        .transport_auth
        .insert("login.test".into(), auth(&dir, PASSWORD, Mechanism::Login));
    config.tls.ca_file = Some(pf.ca_file());
    let d = common::deliverer(config);
    let out = common::deliver(&d, "login.test", &["b@login.test"]).await;
    assert_eq!(
        out[0].1.status,
        Status::Delivered,
        "{:?}\n{}",
        out[0].1,
        pf.log()
    );
    assert_eq!(out[0].1.tls, Some(true));
    postfix_log(&pf, "sasl_method=LOGIN, sasl_username=hedwig@").await;
    let got = sink.wait_for(1, WAIT).await.expect("relayed by Postfix");
    assert_eq!(got[0].rcpt_to, ["b@login.test"]);
}

/// Held by the tests whose logins fail: tracing caches per call site whether anyone listens,
/// and a call site first reached by one test while another installs its subscriber can be
/// cached as "nobody" (so the log test would see nothing).
static FAILING_LOGINS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Collects the worker's log lines (the tracing default of this test's runtime thread).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_defers_with_535_counts_and_logs_once() {
    let _serial = FAILING_LOGINS.lock().await;
    let (pf, sink) = smarthost("127.0.180.14", "127.0.180.15").await;
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let lines = lines.clone();
            move || lines.clone()
        })
        .with_ansi(false)
        .finish();
    // The subscriber goes with the future, whichever thread polls it.
    async { wrong_password(&pf, &sink, &lines).await }
        .with_subscriber(subscriber)
        .await;
}

async fn wrong_password(pf: &Postfix, sink: &SmtpReceiver, lines: &Lines) {
    // Earlier tests may have reached the worker's log call sites while no subscriber was
    // interested (tracing caches that): ask again now that ours is in place.
    tracing::callsite::rebuild_interest_cache();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.relayhost = Some("[127.0.180.14]:587".into());
    config.relay_auth = Some(auth(&dir, "wrong", Mechanism::Plain));
    config.tls.ca_file = Some(pf.ca_file());
    let d = common::deliverer(config);
    for i in 0..3 {
        let rcpt = format!("r{i}@far.test");
        let out = common::deliver(&d, "far.test", &[rcpt.as_str()]).await;
        let o = &out[0].1;
        assert_eq!(
            (o.status, o.reason.as_str()),
            (Status::Deferred, "auth"),
            "{o:?}"
        );
        assert!(o.response.contains("535"), "{o:?}");
        assert!(o.response.contains("relayhost [127.0.180.14]:587"), "{o:?}");
        assert!(
            !o.response.contains("wrong"),
            "the password stays out: {o:?}"
        );
    }
    assert_eq!(d.metrics.get(Counter::AuthFailure), 3);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login at relayhost"))
        .collect();
    assert_eq!(logged.len(), 1, "one log line for three failures:\n{text}");
    assert!(
        logged[0].contains("535") && logged[0].contains("ERROR"),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the password is never logged:\n{text}"
    );
    let log = postfix_log(pf, "SASL PLAIN authentication failed").await;
    assert!(!log.contains("sasl_method="), "{log}");
    assert!(sink.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_certificate_sends_no_auth() {
    let _serial = FAILING_LOGINS.lock().await;
    let (pf, sink) = smarthost("127.0.180.16", "127.0.180.17").await;
    let dir = tempfile::tempdir().unwrap();
    for (hop, tls) in [
        ("[127.0.180.16]:587", LoginTls::Starttls),
        ("[127.0.180.16]:465", LoginTls::Wrapper),
    ] {
        let mut config = config();
        config.relayhost = Some(hop.into());
        let mut a = auth(&dir, PASSWORD, Mechanism::Plain);
        a.tls = Some(tls);
        config.relay_auth = Some(a);
        // No tls.ca_file: the private CA is unknown, the certificate does not verify.
        let d = common::deliverer(config);
        let out = common::deliver(&d, "far.test", &["c@far.test"]).await;
        let o = &out[0].1;
        assert_eq!(
            (o.status, o.reason.as_str()),
            (Status::Deferred, "auth"),
            "{o:?}"
        );
        assert!(o.response.contains("the login was not sent"), "{o:?}");
        assert!(o.response.contains(hop), "{o:?}");
        assert_eq!(d.metrics.get(Counter::AuthFailure), 1);
    }
    // Postfix saw both handshakes fail on our side (unknown CA), and no AUTH, ever.
    let log = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let log = pf.log();
            if log.matches("alert unknown ca").count() >= 2 || std::time::Instant::now() > deadline
            {
                std::thread::sleep(Duration::from_millis(300));
                return pf.log();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(log.matches("alert unknown ca").count(), 2, "{log}");
    assert!(!log.contains("auth="), "{log}");
    assert!(!log.contains("sasl_"), "{log}");
    assert!(sink.received().is_empty());

    // allow_unverified (a relay on a private network): the same certificate, and the login
    // goes through.
    let mut config = config();
    config.relayhost = Some("[127.0.180.16]:587".into());
    let mut a = auth(&dir, PASSWORD, Mechanism::Plain);
    a.allow_unverified = true;
    config.relay_auth = Some(a);
    let d = common::deliverer(config);
    let out = common::deliver(&d, "far.test", &["d@far.test"]).await;
    assert_eq!(out[0].1.status, Status::Delivered, "{:?}", out[0].1);
    postfix_log(&pf, "sasl_method=PLAIN, sasl_username=hedwig@").await;
    assert_eq!(
        sink.wait_for(1, WAIT).await.expect("relayed")[0].rcpt_to,
        ["d@far.test"]
    );
}
