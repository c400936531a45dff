//! Fairness inside a lane (issue 17, docs/lanes.md): host A queues a burst of bulk mail,
//! then host B queues a few; with fairness on, beanstalkd hands B's messages to the worker
//! among A's first ones, because each of A's messages carries a priority one higher than the
//! one before. With fairness off (`spread: 0`), B's wait behind A's whole burst.
//!
//! Real beanstalkd, DNS and SMTP receiver (testkit); the real postoffice and one worker task,
//! started after the posts so that the order of delivery is the order beanstalkd serves (no
//! timing in the assertions: positions in the receiver's list).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hedwig_core::key::derive_key;
use hedwig_core::wire::{Email, Submission};
use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;

use crate::common::{worker_config, zone_at, Postoffice, Worker, RCPT_DOMAIN, SECRET, SENDER};

const HOST_A: &str = "a.e2e.test";
const HOST_B: &str = "b.e2e.test";
/// A's burst; B's few.
const BURST: usize = 60;
const FEW: usize = 3;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 160, last)
}

async fn post(http: &reqwest::Client, postoffice: SocketAddr, host: &str, subject: &str) {
    let message = format!("From: {SENDER}\r\nSubject: {subject}\r\n\r\nbody\r\n");
    let sub = Submission {
        fqdn: host.into(),
        key: derive_key(SECRET, host),
        email: Email::new(
            SENDER.into(),
            vec![format!("user@{RCPT_DOMAIN}")],
            message.into_bytes(),
        ),
        id: None,
        app: None,
        fixups: Vec::new(),
    };
    let status = http
        .post(Postoffice::url(postoffice))
        .form(&sub.to_form())
        .send()
        .await
        .expect("the postoffice answers")
        .status();
    assert_eq!(status, 200, "{host} {subject}");
}

/// Queues A's burst then B's few in the bulk lane with `spread`, delivers them all with one
/// worker task, and returns the positions (0-based) of B's messages in the order received.
async fn positions_of_b(spread: u32, last: u8) -> Vec<usize> {
    let beanstalkd = Beanstalkd::start_on(ip(last));
    let (rcpt_mx, sender_mx) = (ip(last + 2), ip(last + 3));
    let dns = DnsServer::start(zone_at(rcpt_mx, sender_mx)).await;
    let receiver = SmtpReceiver::start(
        SocketAddr::from((rcpt_mx, 25)),
        Behaviour::new()
            .hostname("mx.rcpt.e2e.test")
            .remember(BURST + FEW + 10),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    let services = ip(last + 1);
    let addr = SocketAddr::from((services, hedwig_testkit::net::free_port(services)));
    let postoffice = Postoffice::start_with(addr, &beanstalkd, |c| {
        for lane in c.lanes.values_mut() {
            lane.spread = spread;
        }
    })
    .await;
    let http = reqwest::Client::new();
    for i in 0..BURST {
        post(&http, addr, HOST_A, &format!("A-{i}")).await;
    }
    for i in 0..FEW {
        post(&http, addr, HOST_B, &format!("B-{i}")).await;
    }
    let mut config = worker_config(&beanstalkd, dns.addr());
    config.concurrency = 1;
    let worker = Worker::start(config);
    let got = receiver
        .wait_for(BURST + FEW, Duration::from_secs(120))
        .await
        .expect("every message is delivered");
    worker.stop().await;
    postoffice.stop().await;
    let subjects: Vec<String> = got
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data);
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert_eq!(subjects.len(), BURST + FEW);
    assert_eq!(
        subjects.iter().filter(|s| s.starts_with("A-")).count(),
        BURST,
        "all of A's mail arrives: {subjects:?}"
    );
    subjects
        .iter()
        .enumerate()
        .filter(|(_, s)| s.starts_with("B-"))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_host_overtakes_a_burst_in_its_lane() {
    let fair = positions_of_b(100_000, 80).await;
    assert_eq!(fair.len(), FEW);
    // A0, B0, A1, B1, A2, B2: B's k-th message has A's k-th as its only equal.
    assert!(
        fair.iter().all(|&p| p < 2 * FEW + 2),
        "with fairness, B's messages come among A's first: {fair:?}"
    );
    let unfair = positions_of_b(0, 90).await;
    assert!(
        unfair.iter().all(|&p| p >= BURST),
        "without fairness, B's wait behind A's burst: {unfair:?}"
    );
}
