//! Issue 11 F8, silent loss after `250`, with the real `mailman` binary, the real postoffice
//! (in-process) and beanstalkd. The postoffice is down when the client sends, so mailman
//! answers `250 … queued locally`; it comes up later and the background retries post.
//!
//! - 13 MB of control characters (6x when JSON-escaped, past the postoffice's HTTP body limit)
//!   must be refused at DATA or delivered, never end in `rejected/` unseen: mailman sends the
//!   smaller of the JSON and base64 forms, so it is delivered, byte for byte.
//! - A permanent refusal after `250` (here 403: the sender's domain is not allowed for this
//!   host) produces an RFC 3464 bounce, posted through the postoffice from the null sender, to
//!   the envelope sender; never for the null sender.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::real::{connect_from, read_until, send, RealMailman, FIXUPS_OFF};
use crate::common::stack::{split_received, take_jobs, Postoffice};
use hedwig_testkit::Beanstalkd;

// each test its own addresses: tests run in parallel and free ports are only probed
const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 105, 1);
const PO_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 105, 2);
const MM2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 105, 4);
const PO2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 105, 5);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 105, 3);

/// Sends one message; returns the reply to the final dot.
async fn send_message(mailman: &RealMailman, from: &str, body: &[u8]) -> String {
    let mut c = connect_from(CLIENT, mailman.smtp).await;
    send(
        &mut c,
        format!("EHLO c\r\nMAIL FROM:<{from}>\r\nRCPT TO:<rcpt@example.org>\r\nDATA\r\n")
            .as_bytes(),
    )
    .await;
    let head = read_until(&mut c, Duration::from_secs(10), |t| t.contains("354 ")).await;
    assert!(head.contains("354 "), "{head:?}");
    send(&mut c, body).await;
    send(&mut c, b".\r\nQUIT\r\n").await;
    let r = read_until(&mut c, Duration::from_secs(60), |t| t.contains("221 ")).await;
    r.lines().next().unwrap_or_default().to_string()
}

fn rejected_files(mailman: &RealMailman) -> usize {
    std::fs::read_dir(mailman.spool.join("rejected"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (bounded by `limit`) for `n` jobs, or for a file in `rejected/`.
async fn jobs(
    bs: &Beanstalkd,
    mailman: &RealMailman,
    n: usize,
    limit: Duration,
) -> Vec<hedwig_queue::job::Job> {
    let mut jobs = Vec::new();
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        jobs.extend(take_jobs(bs, Duration::from_secs(1)).await);
        if jobs.len() >= n || rejected_files(mailman) > 0 {
            break;
        }
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_delivered_or_refused_never_lost() {
    let bs = Beanstalkd::start();
    let po_addr = SocketAddr::new(IpAddr::V4(PO_IP), hedwig_testkit::net::free_port(PO_IP));
    let mailman = RealMailman::start(MM_IP, &format!("http://{po_addr}/"), FIXUPS_OFF).await;
    // 13 MB: lines of 998 control characters (each `\u0001` in JSON, 6 octets)
    let mut body = b"Subject: control characters\r\n\r\n".to_vec();
    let line = [[0x01u8; 998].as_slice(), b"\r\n"].concat();
    while body.len() < 13_000_000 {
        body.extend_from_slice(&line);
    }
    let reply = send_message(&mailman, "app@example.com", &body).await;
    if reply.starts_with("552 ") {
        // refused at DATA: the client knows
        drop(mailman);
        return;
    }
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    let po = Postoffice::start_on(&bs, po_addr).await;
    let jobs = jobs(&bs, &mailman, 1, Duration::from_secs(120)).await;
    let set_aside = rejected_files(&mailman);
    let log = mailman.stop();
    assert_eq!(set_aside, 0, "set aside after 250:\n{}", tail(&log));
    assert_eq!(jobs.len(), 1, "{}", tail(&log));
    let (_, stored) = split_received(&jobs[0].message);
    assert!(stored == body, "the message arrived changed");
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_250_bounces_to_the_sender() {
    let bs = Beanstalkd::start();
    let po_addr = SocketAddr::new(IpAddr::V4(PO2_IP), hedwig_testkit::net::free_port(PO2_IP));
    let mailman = RealMailman::start(MM2_IP, &format!("http://{po_addr}/"), &[]).await;
    let body = b"From: App <app@other.test>\r\nSubject: not allowed here\r\nMessage-ID: <m1@other.test>\r\n\r\nhello\r\n";
    let reply = send_message(&mailman, "app@other.test", body).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    // and one from the null sender, also refused (413, over the postoffice's limit): never
    // bounced
    let big = [
        b"From: MAILER-DAEMON@allowed.test\r\nSubject: a bounce\r\n\r\n".as_slice(),
        &[b'x'; 5000],
        b"\r\n",
    ]
    .concat();
    let reply = send_message(&mailman, "", &big).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    let po = Postoffice::start_with(&bs, po_addr, |c| {
        c.default_policy.allowed_sender_domains = vec!["allowed.test".into()];
        c.max_message_size = hedwig_core::config::ByteSize(4000);
    })
    .await;
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.extend(take_jobs(&bs, Duration::from_secs(1)).await);
        if !jobs.is_empty() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let more = take_jobs(&bs, Duration::from_secs(1)).await;
    assert!(!jobs.is_empty(), "no bounce:\n{}", tail(&mailman.log()));
    let log = mailman.stop();
    assert_eq!(
        jobs.len() + more.len(),
        1,
        "exactly one bounce ({} set aside):\n{}",
        rejected_files_in(&log),
        tail(&log)
    );
    let bounce = &jobs[0];
    assert_eq!(
        bounce.envelope.mail_from, "",
        "a bounce comes from the null sender"
    );
    assert_eq!(bounce.envelope.rcpt_to, ["app@other.test"]);
    let text = String::from_utf8_lossy(&bounce.message);
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; rcpt@example.org"),
        "{text}"
    );
    assert!(text.contains("Status: 5.7.1"), "{text}");
    assert!(text.contains("not allowed for this host"), "{text}");
    assert!(
        text.contains("Subject: not allowed here"),
        "the original headers: {text}"
    );
    assert!(
        log.contains("no bounce for a message from the null sender"),
        "{}",
        tail(&log)
    );
    assert_eq!(
        rejected_files_in(&log),
        2,
        "both refused messages kept for an operator"
    );
    po.stop().await;
}

fn rejected_files_in(log: &str) -> usize {
    log.matches("moved to rejected/").count()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
