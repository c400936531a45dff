//! Late bounces and complaints (issue 14) through the whole chain: swaks -> mailman -> the
//! post office (ledger writer on SQLite, bounce listener on) -> beanstalkd -> the worker with
//! `verp:` for the sender's domain -> the recipients' MX, which takes both copies, each in its
//! own transaction from `bounces+<token>@bounces.sender.e2e.test`.
//!
//! Then swaks, as the remote domain's mail system, sends a real RFC 3464 DSN for one recipient
//! and an RFC 5965 ARF complaint for the other to the bounce listener: the ledger shows the
//! first `bounced` (5.1.1, after its `sent`) and the second `complained`, on the right message
//! and recipients. A forged token, an unknown domain, an auto-reply and an oversized report
//! are refused, and change nothing.
//!
//! Addresses: `127.0.170.4x` (`127.0.170.1-9` belong to `metric_names`, in the same binary).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{
    worker_config, zone_at, Mailman, Postoffice, CLIENT_HELO, RCPT_DOMAIN, SENDER, SENDER_DOMAIN,
    WAIT,
};
use hedwig_core::verp::VerpKey;
use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;

const SERVICES: Ipv4Addr = Ipv4Addr::new(127, 0, 170, 41);
const RCPT_MX: Ipv4Addr = Ipv4Addr::new(127, 0, 170, 42);
const SENDER_MX: Ipv4Addr = Ipv4Addr::new(127, 0, 170, 43);
const LISTENER: Ipv4Addr = Ipv4Addr::new(127, 0, 170, 44);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 170, 49);
const BOUNCE_DOMAIN: &str = "bounces.sender.e2e.test";
const VERP_SECRET: &str = "e2e-verp-secret-0123456789abcdef0123456789";
const ALICE: &str = "alice@rcpt.e2e.test";
const BOB: &str = "bob@rcpt.e2e.test";
const MAX_REPORT: u64 = 64 * 1024;

const DSN: &str = include_str!("../../../message/testdata/reports/postfix-dsn.eml");
const ARF: &str = include_str!("../../../message/testdata/reports/arf.eml");

/// swaks to the bounce listener as the remote mail system (null sender), `data` on stdin;
/// its exit status and transcript (a refusal is an expected outcome here).
async fn swaks_report(listener: SocketAddr, to: &str, data: &str) -> (bool, String) {
    let args = [
        "--server".to_string(),
        listener.ip().to_string(),
        "--port".into(),
        listener.port().to_string(),
        "--local-interface".into(),
        CLIENT.to_string(),
        "--helo".into(),
        format!("mx.{RCPT_DOMAIN}"),
        "--from".into(),
        "<>".into(),
        "--to".into(),
        to.into(),
        "--data".into(),
        "-".into(),
        "--timeout".into(),
        "20".into(),
    ];
    let mut child = tokio::process::Command::new("/usr/bin/swaks")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run swaks (apt-get install swaks)");
    let mut input = child.stdin.take().expect("stdin");
    let data = data.to_string();
    // Written in a task: a listener that refuses early stops reading.
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = input.write_all(data.as_bytes()).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("swaks finishes within 30 s")
        .expect("wait for swaks");
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

/// Polls the ledger (bounded) until `ok` holds for the message's recipients' statuses.
async fn wait_ledger(
    url: &str,
    queue_id: &str,
    what: &str,
    ok: impl Fn(&[hedwig_ledger::model::Recipient]) -> bool,
) -> hedwig_ledger::model::Timeline {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(store) = hedwig_ledger::Store::open(url).await {
            let timeline = store.timeline(queue_id).await;
            store.close().await;
            if let Ok(Some(t)) = timeline {
                if ok(&t.recipients) {
                    return t;
                }
                assert!(
                    tokio::time::Instant::now() < end,
                    "{what}: not within {WAIT:?}: {:?}",
                    t.recipients
                );
            }
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: no timeline within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status<'a>(recipients: &'a [hedwig_ledger::model::Recipient], address: &str) -> &'a str {
    recipients
        .iter()
        .find(|r| r.recipient == address)
        .map(|r| r.status.as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_and_an_arf_report_land_on_the_right_message() {
    if std::env::var_os("RUST_LOG").is_some() {
        hedwig_service::logging::init();
    }
    let beanstalkd = Beanstalkd::start();
    let dns = DnsServer::start(zone_at(RCPT_MX, SENDER_MX)).await;
    let rcpt_mx = SmtpReceiver::start(
        SocketAddr::from((RCPT_MX, 25)),
        Behaviour::new().hostname("mx.rcpt.e2e.test"),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    let _sender_mx = SmtpReceiver::start(
        SocketAddr::from((SENDER_MX, 25)),
        Behaviour::new().hostname("mx.sender.e2e.test"),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");

    let data = tempfile::tempdir().unwrap();
    let secret_file = data.path().join("verp-secret");
    std::fs::write(&secret_file, format!("{VERP_SECRET}\n")).unwrap();
    let listener = SocketAddr::from((LISTENER, hedwig_testkit::net::free_port(LISTENER)));
    let po_addr = SocketAddr::from((SERVICES, hedwig_testkit::net::free_port(SERVICES)));
    let dir = data.path().to_path_buf();
    let secret = secret_file.clone();
    let postoffice = Postoffice::start_with(po_addr, &beanstalkd, |c| {
        c.data_dir = dir;
        c.ledger.writer = true;
        c.ledger.check_interval = Duration::from_millis(200);
        c.bounce_listener = Some(postoffice::bounce::BounceListenerConfig {
            listen: Some(listener),
            domains: vec![BOUNCE_DOMAIN.into()],
            secret_file: Some(secret),
            max_message_size: hedwig_core::config::ByteSize(MAX_REPORT),
            ..Default::default()
        });
    })
    .await;
    let ledger_url = format!("sqlite://{}", data.path().join("ledger.db").display());
    let mut wc = worker_config(&beanstalkd, dns.addr());
    wc.verp.secret_file = Some(secret_file.clone());
    wc.verp.domains = [(SENDER_DOMAIN.to_string(), BOUNCE_DOMAIN.to_string())].into();
    let worker = crate::common::Worker::start(wc);
    let mailman = Mailman::start_on(SocketAddr::from((SERVICES, 0)), po_addr).await;

    // One message to two recipients, through mailman with swaks.
    let message = format!(
        "From: {SENDER}\r\nTo: {ALICE}, {BOB}\r\nSubject: newsletter\r\n\
         Message-ID: <verp-1@sender.e2e.test>\r\n\r\nhello"
    );
    let args: Vec<String> = [
        "--server",
        &mailman.smtp.ip().to_string(),
        "--port",
        &mailman.smtp.port().to_string(),
        "--local-interface",
        &CLIENT.to_string(),
        "--helo",
        CLIENT_HELO,
        "--from",
        SENDER,
        "--to",
        &format!("{ALICE},{BOB}"),
        "--data",
        "-",
        "--timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    crate::common::clients::run("/usr/bin/swaks", &args, message.as_bytes()).await;

    // Two transactions, each from its own VERP address naming the message and recipient.
    let got = crate::common::check::wait_for(&rcpt_mx, 2, "the recipients' MX").await;
    let key = VerpKey::new(VERP_SECRET);
    let domains = vec![BOUNCE_DOMAIN.to_string()];
    let mut verp_of = std::collections::HashMap::new();
    let mut queue_ids = std::collections::HashSet::new();
    for r in &got {
        assert_eq!(
            r.rcpt_to.len(),
            1,
            "one recipient per transaction: {:?}",
            r.rcpt_to
        );
        let v = key
            .verify_address(&r.mail_from, &domains)
            .unwrap_or_else(|| {
                panic!(
                    "MAIL FROM {} is a valid VERP address: {:?}",
                    r.mail_from,
                    rcpt_mx.commands()
                )
            });
        assert_eq!(v.recipient, r.rcpt_to[0]);
        queue_ids.insert(v.queue_id.clone());
        verp_of.insert(v.recipient.clone(), r.mail_from.clone());
    }
    assert_eq!(queue_ids.len(), 1, "both copies are of one message");
    let queue_id = queue_ids.into_iter().next().unwrap();
    wait_ledger(&ledger_url, &queue_id, "both sent", |r| {
        status(r, ALICE) == "sent" && status(r, BOB) == "sent"
    })
    .await;

    // Refused: a forged token (one character changed), an unknown domain, mail that is not a
    // report, an oversized report. None of them changes the ledger.
    let bob_verp = &verp_of[BOB];
    let alice_verp = &verp_of[ALICE];
    let (at, _) = bob_verp.split_once('@').unwrap();
    let last = at.chars().last().unwrap();
    let forged = format!(
        "{}{}@{BOUNCE_DOMAIN}",
        &at[..at.len() - 1],
        if last == 'a' { 'b' } else { 'a' }
    );
    for (to, data, code) in [
        (forged.as_str(), DSN.to_string(), "550 5.1.1"),
        (
            &format!("{at}@other.e2e.test"),
            DSN.to_string(),
            "550 5.1.1",
        ),
        (
            "bounces@bounces.sender.e2e.test",
            DSN.to_string(),
            "550 5.1.1",
        ),
        (
            bob_verp.as_str(),
            "Subject: Out of office\r\n\r\nBack on Monday.".to_string(),
            "550 5.6.0",
        ),
        (
            bob_verp.as_str(),
            format!("{DSN}\n{}", "x".repeat(MAX_REPORT as usize * 2)),
            "552 5.3.4",
        ),
    ] {
        let (ok, transcript) = swaks_report(listener, to, &data).await;
        assert!(!ok, "refused: {to}\n{transcript}");
        assert!(
            transcript.contains(code),
            "{to}: {code} expected:\n{transcript}"
        );
    }

    // The DSN for bob, the complaint for alice.
    let dsn = DSN.replace("bounces+TOKEN@bounces.example.com", bob_verp);
    let (ok, transcript) = swaks_report(listener, bob_verp, &dsn).await;
    assert!(
        ok && transcript.contains("250 2.0.0 recorded"),
        "{transcript}"
    );
    let arf = ARF
        .replace("bounces+TOKEN@bounces.example.com", alice_verp)
        .replace("<bob@example.org>", &format!("<{ALICE}>"));
    let (ok, transcript) = swaks_report(listener, alice_verp, &arf).await;
    assert!(
        ok && transcript.contains("250 2.0.0 recorded"),
        "{transcript}"
    );
    // The same DSN again (a sender that lost our 250): recorded once.
    let (ok, _) = swaks_report(listener, bob_verp, &dsn).await;
    assert!(ok);

    let t = wait_ledger(&ledger_url, &queue_id, "bounced and complained", |r| {
        status(r, BOB) == "bounced" && status(r, ALICE) == "complained"
    })
    .await;
    let bob = t.recipients.iter().find(|r| r.recipient == BOB).unwrap();
    assert_eq!(bob.dsn.as_deref(), Some("5.1.1"));
    assert_eq!(bob.code, Some(550));
    assert!(
        bob.reply.as_deref().unwrap_or("").contains("late bounce"),
        "{bob:?}"
    );
    let alice = t.recipients.iter().find(|r| r.recipient == ALICE).unwrap();
    assert!(
        alice
            .reply
            .as_deref()
            .unwrap_or("")
            .contains("Feedback-Type: abuse"),
        "{alice:?}"
    );
    // A complaint is about a delivered message: it stays counted as sent; one bounced.
    assert_eq!(t.message.status.as_str(), "partial");
    let outcomes: Vec<(String, String)> = t
        .events
        .iter()
        .filter_map(|e| match &e.what {
            hedwig_queue::event::What::Recipient(r) => {
                Some((r.recipient.clone(), r.outcome.to_string()))
            }
            _ => None,
        })
        .collect();
    let count = |who: &str, what: &str| {
        outcomes
            .iter()
            .filter(|(r, o)| r == who && o == what)
            .count()
    };
    assert_eq!(count(BOB, "bounced"), 1, "{outcomes:?}");
    assert_eq!(count(ALICE, "complained"), 1, "{outcomes:?}");
    assert_eq!(count(BOB, "sent"), 1, "{outcomes:?}");

    mailman.stop().await;
    postoffice.stop().await;
    worker.stop().await;
}
