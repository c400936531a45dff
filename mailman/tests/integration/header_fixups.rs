//! Issue 19, header fix-ups and refusals at the edge, against the real `mailman` binary, the
//! real postoffice and beanstalkd: a raw SMTP client sending only `Subject:` gets `Date:`,
//! `Message-ID:`, `From:` (the envelope sender) and `To: undisclosed-recipients:;` added and
//! `Bcc:` removed, recorded in the log line as `fixed=…` and posted as `fixups` (the job
//! carries them); messages receivers refuse (two
//! `From:`, a 999-octet header line, raw 8-bit header bytes without `SMTPUTF8`) get `554 5.6.0`
//! with the reason at DATA, one log line each, and nothing reaches the spool or the queue;
//! with the settings off, the message is queued as sent.

use std::net::Ipv4Addr;
use std::time::Duration;

use hedwig_testkit::Beanstalkd;

use crate::common::real::{connect_from, read_until, send, RealMailman};
use crate::common::stack::{self, split_received, take_jobs};

const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 2);
const MM_IP_2: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 11);
const CLIENT_2: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 12);
const MM_IP_3: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 21);
const CLIENT_3: Ipv4Addr = Ipv4Addr::new(127, 0, 150, 22);

/// One transaction from `client` with `mail_from` (may carry ` SMTPUTF8`), returns the reply
/// to the final dot.
async fn send_message(
    mailman: &RealMailman,
    client: Ipv4Addr,
    mail_from: &str,
    body: &[u8],
) -> String {
    let mut c = connect_from(client, mailman.smtp).await;
    send(
        &mut c,
        format!(
            "EHLO cron.test\r\nMAIL FROM:{mail_from}\r\nRCPT TO:<ops@rcpt.example>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await;
    let head = read_until(&mut c, Duration::from_secs(10), |t| t.contains("354 ")).await;
    assert!(head.contains("354 "), "{head:?}");
    send(&mut c, body).await;
    send(&mut c, b".\r\nQUIT\r\n").await;
    let rest = read_until(&mut c, Duration::from_secs(10), |t| t.contains("221 ")).await;
    rest.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_only_message_is_completed_and_bcc_removed() {
    let bs = Beanstalkd::start();
    let po = stack::Postoffice::start_on(&bs, (MM_IP, 0).into()).await;
    let mailman = RealMailman::start(MM_IP, &po.url(), &[]).await;
    let reply = send_message(
        &mailman,
        CLIENT,
        "<cron@app.example>",
        b"Subject: nightly report\r\n\r\nall good\r\n",
    )
    .await;
    assert!(reply.starts_with("250 "), "{reply:?}");
    let reply = send_message(
        &mailman,
        CLIENT,
        "<cron@app.example>",
        b"To: ops@rcpt.example\r\nBcc: ops@rcpt.example,\r\n secret@rcpt.example\r\nSubject: b\r\nFrom: Cron <cron@app.example>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <own@app.example>\r\n\r\nx\r\n",
    )
    .await;
    assert!(reply.starts_with("250 "), "{reply:?}");
    let jobs = take_jobs(&bs, Duration::from_millis(500)).await;
    assert_eq!(jobs.len(), 2);
    // What was fixed travels with the post (`fixups`) into the job, for the ledger.
    assert_eq!(
        jobs[0].envelope.fixups,
        ["date", "message-id", "from", "to"]
    );
    assert_eq!(jobs[1].envelope.fixups, ["bcc"]);
    let (received, rest) = split_received(&jobs[0].message);
    assert!(received.starts_with("Received: "), "{received}");
    let rest = String::from_utf8(rest).unwrap();
    let lines: Vec<&str> = rest.split("\r\n").collect();
    assert_eq!(lines[0], "Subject: nightly report");
    assert!(lines[1].starts_with("Date: "), "{rest}");
    let date = lines[1].trim_start_matches("Date: ");
    let parts: Vec<&str> = date.split(' ').collect();
    assert!(
        parts.len() == 6 && parts[0].ends_with(',') && parts[5] == "+0000",
        "an RFC 5322 date: {date}"
    );
    assert!(
        lines[2].starts_with("Message-ID: <") && lines[2].ends_with("@mailman.test>"),
        "{rest}"
    );
    assert_eq!(lines[3], "From: cron@app.example");
    assert_eq!(lines[4], "To: undisclosed-recipients:;");
    assert_eq!(&lines[5..], ["", "all good", ""]);
    // The second: only the Bcc: field (with its continuation) is gone.
    let (_, rest) = split_received(&jobs[1].message);
    assert_eq!(
        String::from_utf8(rest).unwrap(),
        "To: ops@rcpt.example\r\nSubject: b\r\nFrom: Cron <cron@app.example>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <own@app.example>\r\n\r\nx\r\n"
    );
    let log = mailman.stop();
    assert_eq!(
        log.matches("fixed=date,message-id,from,to").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("fixed=bcc").count(), 1, "{log}");
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_receivers_refuse_get_554_at_data() {
    let bs = Beanstalkd::start();
    let po = stack::Postoffice::start_on(&bs, (MM_IP_2, 0).into()).await;
    let mailman = RealMailman::start(MM_IP_2, &po.url(), &[]).await;
    let long = format!(
        "Subject: {}\r\nFrom: a@app.example\r\n\r\nx\r\n",
        "x".repeat(990)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "<a@app.example>",
            b"From: a@app.example\r\nFrom: b@app.example\r\nSubject: two\r\n\r\nx\r\n".to_vec(),
            "554 5.6.0 message refused: 2 From: header fields; RFC 5322 section 3.6 allows exactly one",
        ),
        (
            "<a@app.example>",
            b"From: root\r\nSubject: no address\r\n\r\nx\r\n".to_vec(),
            "554 5.6.0 message refused: From: header field without a valid address (\"root\")",
        ),
        (
            "<a@app.example>",
            long.into_bytes(),
            "554 5.6.0 message refused: header line 1 is 999 octets long; RFC 5322 section 2.1.1 allows 998",
        ),
        (
            "<a@app.example>",
            b"From: a@app.example\r\nSubject: Caf\xc3\xa9\r\n\r\nx\r\n".to_vec(),
            "554 5.6.0 message refused: raw 8-bit byte in the Subject header field of a message sent without SMTPUTF8",
        ),
        (
            "<>",
            b"Subject: a bounce without From\r\n\r\nx\r\n".to_vec(),
            "554 5.6.0 message refused: no From: header field, and the null sender gives no address",
        ),
    ];
    for (from, body, expect) in &cases {
        let reply = send_message(&mailman, CLIENT_2, from, body).await;
        assert!(reply.starts_with(expect), "{reply:?} for {from}");
    }
    assert_eq!(crate::common::spooled(&mailman.spool), 0);
    // The same 8-bit Subject with SMTPUTF8 is fine.
    let ok = send_message(
        &mailman,
        CLIENT_2,
        "<a@app.example> SMTPUTF8",
        b"From: a@app.example\r\nSubject: Caf\xc3\xa9\r\n\r\nx\r\n",
    )
    .await;
    assert!(ok.starts_with("250 "), "{ok:?}");
    let jobs = take_jobs(&bs, Duration::from_millis(500)).await;
    assert_eq!(jobs.len(), 1, "only the SMTPUTF8 message was queued");
    let log = mailman.stop();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("outcome=\"refused\""))
        .collect();
    assert_eq!(refused.len(), cases.len(), "one line per refusal:\n{log}");
    for line in &refused {
        assert!(line.contains("client=127.0.150.12"), "{line}");
    }
    assert!(log.contains("2 From: header fields"), "{log}");
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_settings_off_the_message_is_queued_as_sent() {
    let bs = Beanstalkd::start();
    let po = stack::Postoffice::start_on(&bs, (MM_IP_3, 0).into()).await;
    let off = [
        ("HEDWIG_ADD_MISSING_HEADERS__DATE", "false"),
        ("HEDWIG_ADD_MISSING_HEADERS__MESSAGE_ID", "false"),
        ("HEDWIG_ADD_MISSING_HEADERS__FROM", "false"),
        ("HEDWIG_ADD_MISSING_HEADERS__TO", "false"),
        ("HEDWIG_ADD_MISSING_HEADERS__STRIP_BCC", "false"),
        ("HEDWIG_REFUSE_BAD_HEADERS", "false"),
    ];
    let mailman = RealMailman::start(MM_IP_3, &po.url(), &off).await;
    let messages: Vec<Vec<u8>> = vec![
        b"Subject: nightly report\r\nBcc: x@rcpt.example\r\n\r\nall good\r\n".to_vec(),
        format!("Subject: {}\r\n\r\nx\r\n", "x".repeat(990)).into_bytes(),
        b"Subject: Caf\xc3\xa9\r\n\r\nx\r\n".to_vec(),
    ];
    for m in &messages {
        let reply = send_message(&mailman, CLIENT_3, "<>", m).await;
        assert!(reply.starts_with("250 "), "{reply:?}");
    }
    let jobs = take_jobs(&bs, Duration::from_millis(500)).await;
    assert_eq!(jobs.len(), messages.len());
    for (job, sent) in jobs.iter().zip(&messages) {
        let (_, rest) = split_received(&job.message);
        assert_eq!(&rest, sent, "unchanged byte for byte");
        assert!(job.envelope.fixups.is_empty(), "nothing fixed, none posted");
    }
    let log = mailman.stop();
    let unfixed = log
        .lines()
        .filter(|l| l.contains("outcome=\"forwarded\"") && l.ends_with(" fixed="))
        .count();
    assert_eq!(unfixed, messages.len(), "nothing fixed:\n{log}");
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_8bit_headers_off_lets_a_raw_utf8_subject_through_and_keeps_the_rest() {
    let mm_ip = Ipv4Addr::new(127, 0, 151, 31);
    let client = Ipv4Addr::new(127, 0, 151, 32);
    let bs = Beanstalkd::start();
    let po = stack::Postoffice::start_on(&bs, (mm_ip, 0).into()).await;
    let mailman =
        RealMailman::start(mm_ip, &po.url(), &[("HEDWIG_REFUSE_8BIT_HEADERS", "false")]).await;
    let utf8 = b"From: a@app.example\r\nSubject: Caf\xc3\xa9\r\n\r\nx\r\n";
    let ok = send_message(&mailman, client, "<a@app.example>", utf8).await;
    assert!(ok.starts_with("250 "), "{ok:?}");
    let two_from = b"From: a@app.example\r\nFrom: b@app.example\r\nSubject: two\r\n\r\nx\r\n";
    let refused = send_message(&mailman, client, "<a@app.example>", two_from).await;
    assert!(
        refused.starts_with("554 5.6.0 message refused: 2 From: header fields"),
        "{refused:?}"
    );
    let jobs = take_jobs(&bs, Duration::from_millis(500)).await;
    assert_eq!(jobs.len(), 1);
    let (_, rest) = split_received(&jobs[0].message);
    assert!(
        rest.windows(b"Subject: Caf\xc3\xa9\r\n".len())
            .any(|w| w == b"Subject: Caf\xc3\xa9\r\n"),
        "the raw subject arrives as sent"
    );
    mailman.stop();
    po.stop().await;
}
