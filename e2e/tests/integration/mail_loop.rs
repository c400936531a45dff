//! A mail loop is stopped (issue 11, F2): the recipients' domain publishes an MX that is the
//! mailman itself (port 25 on its own address), whose allowed networks include the worker's
//! address. Every delivery goes back into mailman, which posts it again: msmtp → mailman →
//! postoffice → worker → mailman → postoffice → worker → … Each pass adds one `Received:`.
//!
//! Before hop counting, one post made thousands of passes and kept growing. Now the worker
//! refuses a message with more than `hop_limit` (50) `Received:` fields: every recipient fails
//! permanently with `5.4.6` "mail loop", the failure goes to the failed tube, and exactly one
//! bounce goes to the sender. (If mailman refuses the looping message first, with its own
//! `554 5.4.6`, the worker records that answer: the same assertions hold.)

use std::net::SocketAddr;
use std::time::Duration;

use hedwig_queue::job::Job;
use hedwig_queue::tubes::{TUBE_FAILED, TUBE_OUTBOUND};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;

use crate::common::{
    check, clients, worker_config, Mailman, Net, Postoffice, Worker, RCPT_DOMAIN, SENDER,
    SENDER_DOMAIN, WAIT,
};

const NET: Net = Net(120);
/// The worker's default `hop_limit` (Postfix's `hopcount_limit`).
const HOP_LIMIT: usize = 50;
/// How long the test lets the chain run before it calls it an endless loop. 50 passes take
/// about a second on loopback; before the fix the chain made about 90 passes a second.
const LOOP_WAIT: Duration = Duration::from_secs(40);

const MESSAGE: &str = "From: App <app@sender.e2e.test>\r\n\
To: loop@rcpt.e2e.test\r\n\
Subject: round and round\r\n\
Message-ID: <loop-1@sender.e2e.test>\r\n\
\r\n\
Where does this end?\r\n";

/// Jobs ever put into `tube` (beanstalkd's `total-jobs`): every pass through the postoffice
/// is one, and so is every bounce.
async fn total_jobs(beanstalkd: &Beanstalkd, tube: &str) -> u64 {
    let mut client = beanstalk::Client::connect(beanstalkd.url())
        .await
        .expect("connect to beanstalkd");
    match client.stats_tube(tube).await {
        Ok(s) => s.get_u64("total-jobs").unwrap_or(0),
        Err(_) => 0,
    }
}

async fn peek_failed(beanstalkd: &Beanstalkd) -> Option<Job> {
    let mut client = beanstalk::Client::connect(beanstalkd.url())
        .await
        .expect("connect to beanstalkd");
    client
        .use_tube(TUBE_FAILED)
        .await
        .expect("use the failed tube");
    let job = client.peek_ready().await.ok()?;
    Some(Job::decode(&job.body).expect("the failed record decodes"))
}

fn received_fields(message: &[u8]) -> usize {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or("");
    header
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("received:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_looping_through_mailman_stops_at_the_hop_limit() {
    if std::env::var_os("RUST_LOG").is_some() {
        hedwig_service::logging::init();
    }
    let beanstalkd = Beanstalkd::start();
    // The recipients' MX is the mailman on 127.0.120.1:25; bounces go to the sender's MX.
    let mailman_smtp = SocketAddr::from((NET.services(), 25));
    let zone = Zone::new()
        .mx(RCPT_DOMAIN, 10, &format!("mx.{RCPT_DOMAIN}"))
        .a(&format!("mx.{RCPT_DOMAIN}"), &NET.services().to_string())
        .mx(SENDER_DOMAIN, 10, &format!("mx.{SENDER_DOMAIN}"))
        .a(&format!("mx.{SENDER_DOMAIN}"), &NET.sender_mx().to_string());
    let dns = DnsServer::start(zone).await;
    let sender_addr = SocketAddr::from((NET.sender_mx(), 25));
    let sender_mx =
        SmtpReceiver::start(sender_addr, Behaviour::new().hostname("mx.sender.e2e.test"))
            .await
            .unwrap_or_else(|e| panic!("SMTP receiver on {sender_addr} (run as root): {e}"));
    let postoffice_addr = SocketAddr::from((
        NET.services(),
        hedwig_testkit::net::free_port(NET.services()),
    ));
    let postoffice = Postoffice::start(postoffice_addr, &beanstalkd).await;
    let worker = Worker::start(worker_config(&beanstalkd, dns.addr()));
    // mailman's default allowed networks (127.0.0.0/8, …) include the worker's address.
    let mailman = Mailman::start_on(mailman_smtp, postoffice_addr).await;

    let args: Vec<String> = clients::msmtp_options_to(mailman_smtp, NET.client().into())
        .into_iter()
        .chain(["--".to_string(), format!("loop@{RCPT_DOMAIN}")])
        .collect();
    clients::run("/usr/bin/msmtp", &args, MESSAGE.as_bytes()).await;

    // The loop must end in a failed record, not go on.
    let end = tokio::time::Instant::now() + LOOP_WAIT;
    let failed = loop {
        if let Some(job) = peek_failed(&beanstalkd).await {
            break job;
        }
        let passes = total_jobs(&beanstalkd, TUBE_OUTBOUND).await;
        assert!(
            tokio::time::Instant::now() < end,
            "still looping after {LOOP_WAIT:?}: {passes} passes through the postoffice, no \
             failed record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The failure names the loop, with the RFC 3463 routing-loop status.
    let failure = failed
        .envelope
        .failure
        .clone()
        .expect("a failure in the record");
    assert_eq!(failure.dsn.as_deref(), Some("5.4.6"), "{failure:?}");
    assert!(
        failure.response.to_ascii_lowercase().contains("loop"),
        "the failure says loop: {failure:?}"
    );
    assert_eq!(failed.envelope.rcpt_to, [format!("loop@{RCPT_DOMAIN}")]);
    let hops = received_fields(&failed.message);
    // It looped, and stopped at the limit (the worker's 51st pass; or mailman's own count,
    // which may refuse a pass earlier).
    assert!(
        (2..=HOP_LIMIT + 1).contains(&hops),
        "stopped at the limit: {hops} Received fields"
    );

    // One bounce to the sender, naming the loop, and then nothing more.
    let bounces = check::wait_for(&sender_mx, 1, "the sender's MX").await;
    assert_eq!(
        bounces[0].mail_from, "",
        "a bounce comes from the null sender"
    );
    assert_eq!(bounces[0].rcpt_to, [SENDER]);
    let text = String::from_utf8_lossy(&bounces[0].data);
    assert!(text.contains("Status: 5.4.6"), "{text}");
    assert!(text.to_ascii_lowercase().contains("loop"), "{text}");

    let settled = tokio::time::Instant::now() + WAIT;
    loop {
        let queued: u64 = {
            let mut c = beanstalk::Client::connect(beanstalkd.url())
                .await
                .expect("connect");
            match c.stats_tube(TUBE_OUTBOUND).await {
                Ok(s) => [
                    "current-jobs-ready",
                    "current-jobs-delayed",
                    "current-jobs-reserved",
                ]
                .iter()
                .map(|k| s.get_u64(k).unwrap_or(0))
                .sum(),
                Err(_) => 0,
            }
        };
        if queued == 0 && mailman.spooled() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < settled,
            "the queue does not settle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let passes = total_jobs(&beanstalkd, TUBE_OUTBOUND).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        total_jobs(&beanstalkd, TUBE_OUTBOUND).await,
        passes,
        "nothing is on its way any more"
    );
    // Every pass is one job, plus the one bounce.
    assert!(
        passes as usize <= HOP_LIMIT + 2,
        "{passes} jobs for one post: the loop was not stopped at the limit"
    );
    assert_eq!(sender_mx.received().len(), 1, "exactly one bounce");
    let mut c = beanstalk::Client::connect(beanstalkd.url())
        .await
        .expect("connect");
    let failed_jobs = c
        .stats_tube(TUBE_FAILED)
        .await
        .ok()
        .and_then(|s| s.get_u64("total-jobs"))
        .unwrap_or(0);
    assert_eq!(failed_jobs, 1, "one failed record");

    mailman.stop().await;
    postoffice.stop().await;
    worker.stop().await;
}
