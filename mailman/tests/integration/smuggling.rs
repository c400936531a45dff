//! Issue 11 F6, SMTP smuggling (CVE-2023-51764 class) against the real `mailman` binary: for
//! every end-of-data shape of the advisory except `\r\n.\r\n`, a second transaction pipelined
//! behind it inside the body must stay message text. Exactly one message per session reaches
//! beanstalkd (through the real postoffice), its body intact with CRLF lines, and no job is
//! ever made for the hidden transaction's recipient. With `bare_newline: reject` the shapes
//! with a bare LF get `550 5.5.2` and nothing is queued.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::real::{connect_from, read_to_close, read_until, send, RealMailman};
use crate::common::stack::{split_received, take_jobs, Postoffice};
use hedwig_testkit::Beanstalkd;

const PO_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 100, 1);
const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 100, 2);
// the second test's own addresses: tests run in parallel and free ports are only probed
const MM_IP_2: Ipv4Addr = Ipv4Addr::new(127, 0, 100, 12);
const PO_IP_2: Ipv4Addr = Ipv4Addr::new(127, 0, 100, 11);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 100, 3);

const HIDDEN: &[u8] = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n\
Subject: smuggled\r\n\r\nforged\r\n";

/// (shape, how mailman stores it)
const SHAPES: [(&[u8], &[u8]); 9] = [
    (b"\n.\n", b"\r\n\r\n"),
    (b"\n.\r\n", b"\r\n\r\n"),
    (b"\r\n.\n", b"\r\n\r\n"),
    (b"\r.\r", b"\r.\r"),
    (b"\r.\r\n", b"\r.\r\n"),
    (b"\r\n.\r", b"\r\n\r"),
    (b"\n.\r", b"\r\n\r"),
    (b"\r.\n", b"\r.\r\n"),
    (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n"),
];

async fn start(po_ip: Ipv4Addr) -> (Beanstalkd, Postoffice) {
    let bs = Beanstalkd::start();
    let po_addr = SocketAddr::new(IpAddr::V4(po_ip), hedwig_testkit::net::free_port(po_ip));
    let po = Postoffice::start_on(&bs, po_addr).await;
    (bs, po)
}

/// One session: the envelope, then after `354` the body with `shape` and the hidden
/// transaction, the real end and QUIT. Returns the replies after `354`.
async fn session(mailman: SocketAddr, n: usize, shape: &[u8]) -> String {
    let mut c = connect_from(CLIENT_IP, mailman).await;
    send(
        &mut c,
        b"EHLO client.test\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<someone@example.org>\r\nDATA\r\n",
    )
    .await;
    let head = read_until(&mut c, Duration::from_secs(10), |t| t.contains("\r\n354 ")).await;
    assert!(head.contains("\r\n354 "), "{head:?}");
    let mut body = format!("Subject: shape {n}\r\n\r\nbody").into_bytes();
    body.extend_from_slice(shape);
    body.extend_from_slice(HIDDEN);
    body.extend_from_slice(b".\r\nQUIT\r\n");
    send(&mut c, &body).await;
    read_to_close(&mut c, Duration::from_secs(15)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_transaction_is_never_executed() {
    let (bs, po) = start(PO_IP).await;
    let mailman = RealMailman::start(MM_IP, &po.url(), &[]).await;
    for (n, (shape, _)) in SHAPES.iter().enumerate() {
        let replies = session(mailman.smtp, n, shape).await;
        let codes: Vec<&str> = replies.lines().map(|l| &l[..l.len().min(3)]).collect();
        assert_eq!(codes, ["250", "221"], "shape {shape:?}: {replies:?}");
    }
    let jobs = take_jobs(&bs, Duration::from_secs(2)).await;
    let log = mailman.stop();
    assert_eq!(
        jobs.len(),
        SHAPES.len(),
        "one job per session, none for a hidden transaction: {:#?}\n{log}",
        jobs.iter().map(|j| &j.envelope.rcpt_to).collect::<Vec<_>>()
    );
    for job in &jobs {
        assert_eq!(job.envelope.mail_from, "app@example.com");
        assert_eq!(job.envelope.rcpt_to, ["someone@example.org"]);
        let (_, body) = split_received(&job.message);
        let text = String::from_utf8_lossy(&body);
        let n: usize = text
            .strip_prefix("Subject: shape ")
            .and_then(|t| t.split("\r\n").next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{text:?}"));
        // mailman adds the missing header fields (issue 19) at the end of the header block;
        // everything from the first empty line on is the client's, byte for byte.
        let mut expected = b"\r\n\r\nbody".to_vec();
        expected.extend_from_slice(SHAPES[n].1);
        expected.extend_from_slice(HIDDEN);
        let blank = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(
            &body[blank..],
            expected,
            "shape {:?}: {text:?}",
            SHAPES[n].0
        );
        assert!(
            text.contains("\r\nTo: undisclosed-recipients:;\r\n\r\nbody"),
            "{text:?}"
        );
    }
    po.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_newline_reject_refuses_and_queues_nothing() {
    let (bs, po) = start(PO_IP_2).await;
    let mailman =
        RealMailman::start(MM_IP_2, &po.url(), &[("HEDWIG_BARE_NEWLINE", "reject")]).await;
    let mut queued = 0;
    for (n, (shape, _)) in SHAPES.iter().enumerate() {
        let replies = session(mailman.smtp, n, shape).await;
        let bare_lf = shape
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || shape[i - 1] != b'\r'));
        if bare_lf {
            assert_eq!(
                replies, "550 5.5.2 Error: bare <LF> received\r\n",
                "shape {shape:?}"
            );
        } else {
            assert!(replies.starts_with("250 "), "shape {shape:?}: {replies:?}");
            queued += 1;
        }
    }
    let jobs = take_jobs(&bs, Duration::from_secs(2)).await;
    assert_eq!(jobs.len(), queued);
    let log = mailman.stop();
    assert_eq!(
        log.matches("bare LF received, refused and closed").count(),
        SHAPES.len() - queued,
        "{log}"
    );
    assert!(jobs
        .iter()
        .all(|j| j.envelope.rcpt_to == ["someone@example.org"]));
    po.stop().await;
}
