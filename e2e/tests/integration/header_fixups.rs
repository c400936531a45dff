//! Issue 19 through the whole chain: what the big receivers accept.
//!
//! - A raw SMTP client (a cron script's hand-rolled SMTP code) sends only a `Subject:`;
//!   mailman adds `Date:`, `Message-ID:`, `From:` (the envelope sender, a domain the host's
//!   policy allows) and `To: undisclosed-recipients:;`, and the worker DKIM-signs the result
//!   for the sender's domain (verified by python3-dkim).
//! - SpamAssassin (Debian's `spamassassin`, local rules only: `-L`, no network tests, no
//!   Bayes, no sa-update) scores what the chain delivers for msmtp, `msmtp -t`, PHP `mail()`,
//!   swaks, the raw client and a DSN the worker generates. The points of every rule hit, except
//!   those in [`EXCLUDED`], must sum to at most 0.5 for each; the table of rules hit is printed.
//!
//! Both scenarios use `127.0.150.x` (port 25 of two receivers), so they run one at a time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hedwig_testkit::smtp::Behaviour;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::clients::PhpMail;
use crate::common::{check, clients, Net, Stack, CLIENT_HELO, MAILMAN_FQDN, SENDER, WAIT};

const NET: Net = Net(150);

/// The two scenarios share NET's addresses.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rules not counted, and why:
/// - `ALL_TRUSTED`: the test's relays are all on loopback, which SpamAssassin trusts; in
///   production the receiver's view differs (and the rule scores negative anyway).
const EXCLUDED: &[&str] = &["ALL_TRUSTED"];

/// The most header points a delivered message may score.
const MAX_POINTS: f64 = 0.5;

/// Connects from the scenario's client address.
async fn connect(stack: &Stack) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(stack.client_ip(), 0))
        .expect("bind the client address");
    tokio::time::timeout(WAIT, socket.connect(stack.mailman_addr()))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A cron script's SMTP: EHLO, MAIL, RCPT, DATA with only a `Subject:` and a body, QUIT.
/// Returns the server's whole side of the conversation.
pub(crate) async fn raw_client(stack: &Stack, subject: &str, body: &str) -> String {
    let mut c = connect(stack).await;
    let script = format!(
        "EHLO {CLIENT_HELO}\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<alice@rcpt.e2e.test>\r\nDATA\r\n"
    );
    c.write_all(script.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + WAIT;
    let mut sent_message = false;
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if !sent_message && text.contains("\r\n354 ") {
            let message = format!("Subject: {subject}\r\n\r\n{body}.\r\nQUIT\r\n");
            c.write_all(message.as_bytes()).await.expect("write");
            sent_message = true;
        }
        if text.contains("\r\n221 ") {
            return text;
        }
        match tokio::time::timeout_at(end, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The value of header field `name` (unfolded) in a message's header block.
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or_default();
    let unfolded = head.replace("\n\t", " ").replace("\n ", " ");
    unfolded.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_only_message_arrives_completed_and_dkim_signed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start(NET).await;
    let talk = raw_client(&stack, "nightly report", "All 12 jobs ran.\r\n").await;
    assert!(talk.contains("\r\n250 2.0.0 Ok: queued"), "{talk}");

    let got = check::wait_for(&stack.rcpt_mx, 1, "the recipients' MX").await;
    let delivered = &got[0];
    assert_eq!(delivered.mail_from, SENDER);
    let parts = check::split(&delivered.data);
    let message = String::from_utf8_lossy(parts.message).into_owned();
    let lines: Vec<&str> = message.split("\r\n").collect();
    assert_eq!(lines[0], "Subject: nightly report", "{message}");
    assert!(lines[1].starts_with("Date: "), "{message}");
    assert!(
        lines[2].starts_with("Message-ID: <") && lines[2].ends_with(&format!("@{MAILMAN_FQDN}>")),
        "{message}"
    );
    assert_eq!(lines[3], format!("From: {SENDER}"));
    assert_eq!(lines[4], "To: undisclosed-recipients:;");
    assert_eq!(&lines[5..], ["", "All 12 jobs ran.", ""]);
    // Signed for the sender's domain, From: included, and the signature verifies.
    assert!(!parts.dkim_signatures.is_empty(), "signed");
    for signature in &parts.dkim_signatures {
        let unfolded = signature.replace("\r\n", "").replace(['\t', ' '], "");
        assert!(unfolded.contains("d=sender.e2e.test;"), "{signature}");
        let h = unfolded
            .split(';')
            .find_map(|tag| tag.strip_prefix("h="))
            .expect("an h= tag");
        assert!(
            h.split(':').any(|f| f.eq_ignore_ascii_case("from")),
            "{signature}"
        );
    }
    check::assert_dkim_passes(&stack.dns, &delivered.data).await;
    stack.wait_settled(WAIT).await;
    stack.stop().await;
}

/// Runs SpamAssassin once over `messages` (an mbox; one Perl start-up) and returns each
/// message's rules hit with their points, by its `Subject:`.
async fn spamassassin(messages: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<(String, f64)>> {
    let dir = tempfile::tempdir().expect("tempdir");
    // A private user_prefs file: no Bayes (its database would carry state between runs),
    // and a header with every rule hit and its score.
    let prefs = dir.path().join("user_prefs");
    std::fs::write(
        &prefs,
        "use_bayes 0\nbayes_auto_learn 0\nreport_safe 0\nadd_header all Tests _TESTSSCORES(,)_\n",
    )
    .expect("write prefs");
    let mut mbox = Vec::new();
    for (_, message) in messages {
        mbox.extend_from_slice(b"From hedwig-e2e Thu Jan  1 00:00:00 1970\n");
        let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
        for line in text.lines() {
            if line.starts_with("From ") || line.starts_with(">From ") {
                mbox.push(b'>');
            }
            mbox.extend_from_slice(line.as_bytes());
            mbox.push(b'\n');
        }
        mbox.push(b'\n');
    }
    let mut child = tokio::process::Command::new("/usr/bin/spamassassin")
        .args(["-L", "-x", "--mbox", "-p"])
        .arg(&prefs)
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run /usr/bin/spamassassin (scripts/install-deps installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&mbox).await.expect("write the mbox");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("spamassassin finishes within 120 s")
        .expect("spamassassin runs");
    assert!(
        out.status.success(),
        "spamassassin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut scores = BTreeMap::new();
    for message in text.split("From hedwig-e2e ").skip(1) {
        let body = message.split_once('\n').map(|(_, m)| m).unwrap_or_default();
        let subject = header_value(body.as_bytes(), "Subject").unwrap_or_default();
        let tests = header_value(body.as_bytes(), "X-Spam-Tests")
            .unwrap_or_else(|| panic!("no X-Spam-Tests in:\n{body}"));
        let rules: Vec<(String, f64)> = tests
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "none")
            .map(|t| {
                let (name, points) = t.split_once('=').unwrap_or((t, "0"));
                (name.to_string(), points.parse().unwrap_or(f64::NAN))
            })
            .collect();
        scores.insert(subject, rules);
    }
    assert_eq!(
        scores.len(),
        messages.len(),
        "one result per message:\n{text}"
    );
    scores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_chain_delivers_scores_low_in_spamassassin() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start_with(
        NET,
        Behaviour::new().rcpt(
            "nobody@rcpt.e2e.test",
            "550 5.1.1 <nobody@rcpt.e2e.test>: no such user here",
        ),
    )
    .await;
    let body = "The nightly backup of the shop database finished at 03:00.\n\
All 12 jobs ran and none of them failed.\n\
\n\
The operations team\n";
    // Each client sends what a typical application gives it: msmtp and PHP add Date: and
    // Message-ID: themselves (or not); mailman completes the rest.
    let msmtp = format!("To: alice@rcpt.e2e.test\nSubject: msmtp plain\n\n{body}");
    clients::msmtp(&stack, &["--", "alice@rcpt.e2e.test"], msmtp.as_bytes()).await;
    let msmtp_t = format!(
        "From: App <{SENDER}>\nTo: Alice <alice@rcpt.e2e.test>\nSubject: msmtp -t\n\n{body}"
    );
    clients::msmtp(&stack, &["-t"], msmtp_t.as_bytes()).await;
    let from_php = format!("From: App <{SENDER}>");
    let sent = clients::php_mail(
        &stack,
        &PhpMail {
            to: "alice@rcpt.e2e.test",
            subject: "PHP mail",
            body,
            headers: &from_php,
        },
    )
    .await;
    assert!(sent, "mail() returned true");
    let swaks = format!(
        "From: App <{SENDER}>\r\nTo: alice@rcpt.e2e.test\r\nSubject: swaks\r\n\r\n{}",
        body.replace('\n', "\r\n").trim_end()
    );
    clients::swaks(&stack, &["alice@rcpt.e2e.test"], swaks.as_bytes()).await;
    let talk = raw_client(&stack, "raw SMTP client", &body.replace('\n', "\r\n")).await;
    assert!(talk.contains("\r\n250 2.0.0 Ok: queued"), "{talk}");
    // A DSN: one recipient refused by the remote MX. The message has a Message-ID of its own:
    // the DSN quotes the original's header section as text/rfc822-headers (RFC 6522), which
    // SpamAssassin reads as body text, and the id msmtp makes (32 random hex digits) is a
    // Bitcoin address to SpamAssassin 4's `__BITCOIN_ID` (`[13]` then 29-34 base58
    // characters) when it starts with 1 or 3 and has no 0: PDS_BTC_ID, 1 point, in about one
    // DSN of 60 (this test's rare failure, found with the dumped message). It is the quoted
    // original, not the DSN, that scores, as in any MTA's headers-only bounce; the DSN keeps
    // quoting it (docs/operator-guide.md, "Bounces and spam filters").
    let bounced = format!(
        "From: App <{SENDER}>\nTo: nobody@rcpt.e2e.test\nSubject: to nobody\n\
         Message-ID: <to-nobody.e2e@sender.e2e.test>\n\n{body}"
    );
    clients::msmtp(&stack, &["--", "nobody@rcpt.e2e.test"], bounced.as_bytes()).await;

    let delivered = check::wait_for(&stack.rcpt_mx, 5, "the recipients' MX").await;
    let dsn = check::wait_for(&stack.sender_mx, 1, "the sender's MX").await;
    let mut messages: Vec<(String, Vec<u8>)> = delivered
        .iter()
        .map(|d| {
            let subject = header_value(&d.data, "Subject").unwrap_or_default();
            (subject, d.data.clone())
        })
        .collect();
    messages.push(("(DSN)".into(), dsn[0].data.clone()));
    let scores = spamassassin(&messages).await;

    println!("SpamAssassin 4 (local rules), per delivered message; * = not counted:");
    println!("{:<40} {:>7}  rule", "message", "points");
    let mut over = Vec::new();
    for (subject, rules) in &scores {
        let mut sum = 0.0;
        for (rule, points) in rules {
            let excluded = EXCLUDED.contains(&rule.as_str());
            if !excluded {
                sum += points;
            }
            println!(
                "{subject:<40} {points:>7.3}  {rule}{}",
                if excluded { " *" } else { "" }
            );
        }
        println!("{subject:<40} {sum:>7.3}  = counted total");
        if sum > MAX_POINTS {
            // The whole message, so that a rule that hits only now and then (a body rule on
            // random text) can be traced to the text it matched.
            let data = messages
                .iter()
                .find(|(s, _)| s == subject)
                .map(|(_, d)| String::from_utf8_lossy(&d[..d.len().min(16_000)]).into_owned())
                .unwrap_or_default();
            over.push(format!(
                "{subject}: {sum:.3} {rules:?}\n--- message ---\n{data}\n---"
            ));
        }
    }
    assert!(
        over.is_empty(),
        "over {MAX_POINTS} points:\n{}",
        over.join("\n")
    );
    for (subject, data) in &messages {
        let missing: Vec<&str> = ["Date", "Message-ID", "From", "To"]
            .into_iter()
            .filter(|f| header_value(data, f).is_none())
            .collect();
        assert!(missing.is_empty(), "{subject}: no {missing:?}");
    }
    stack.wait_settled(WAIT).await;
    stack.stop().await;
}
