//! The tube names an operator chose reach every tier: a postoffice configured with the old
//! `tube: acme` puts into tube `acme`, and a worker with `tube_prefix: acme` reserves from it
//! and delivers (issue 12: the worker had no such setting and always watched `hedwig`, so every
//! message stayed in a tube no worker read).
//!
//! Real beanstalkd, DNS and SMTP receiver (testkit); the real postoffice and worker, in-process.

use std::net::SocketAddr;
use std::time::Duration;

use hedwig_testkit::dns::DnsServer;
use hedwig_testkit::smtp::{Behaviour, SmtpReceiver};
use hedwig_testkit::Beanstalkd;

use crate::common::{
    worker_config, zone, Net, Postoffice, Worker, MAILMAN_FQDN, SECRET, SENDER, WAIT,
};

const NET: Net = Net(160);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_tube_name_is_read_by_the_worker() {
    let beanstalkd = Beanstalkd::start();
    let dns = DnsServer::start(zone(NET)).await;
    let rcpt_mx = SmtpReceiver::start(
        SocketAddr::from((NET.rcpt_mx(), 25)),
        Behaviour::new().hostname("mx.rcpt.e2e.test"),
    )
    .await
    .expect("SMTP receiver on port 25 (run as root)");
    let addr = SocketAddr::from((
        NET.services(),
        hedwig_testkit::net::free_port(NET.services()),
    ));
    // The postoffice with the old key (`tube: acme`, now read as `tube_prefix: acme`), the
    // worker with the new one.
    let postoffice = Postoffice::start_with(addr, &beanstalkd, |c| {
        c.tube = Some("acme".into());
    })
    .await;
    let worker = Worker::start(worker::Config {
        tube_prefix: "acme".into(),
        ..worker_config(&beanstalkd, dns.addr())
    });

    let email = serde_json::json!({
        "mailfrom": SENDER,
        "rcpttos": ["alice@rcpt.e2e.test"],
        "data": format!("From: {SENDER}\r\nTo: alice@rcpt.e2e.test\r\nSubject: tube\r\n\r\nhello\r\n"),
    })
    .to_string();
    let key = hedwig_core::key::derive_key(SECRET, MAILMAN_FQDN);
    let answer = reqwest::Client::new()
        .post(Postoffice::url(addr))
        .form(&[
            ("fqdn", MAILMAN_FQDN),
            ("key", key.as_str()),
            ("email", email.as_str()),
        ])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the postoffice answers");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);

    let got = rcpt_mx.wait_for(1, WAIT).await;
    let mut client = beanstalk::Client::connect(beanstalkd.url()).await.unwrap();
    let stranded = match client.stats_tube("acme").await {
        Ok(s) => s.current_jobs_ready().unwrap_or(0),
        Err(_) => 0,
    };
    let got = got.unwrap_or_else(|| {
        panic!("not delivered within {WAIT:?}: {stranded} job(s) left ready in tube acme")
    });
    assert_eq!(got[0].rcpt_to, ["alice@rcpt.e2e.test"]);
    postoffice.stop().await;
    worker.stop().await;
}
