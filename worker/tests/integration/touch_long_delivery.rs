//! A delivery slower than the job's TTR keeps the job: the worker touches it, so no second
//! worker task picks it up and the message is sent once.

use crate::common;

use std::time::Duration;

use beanstalk::Client;
use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Phase};
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn slow_server_longer_than_ttr_gets_one_copy() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("slow.test", 10, "mx.slow.test")
            .a("mx.slow.test", "127.0.4.100"),
    )
    .await;
    let mx = common::mx(
        "127.0.4.100",
        Behaviour::new().stall_at(Phase::DataEnd, Duration::from_secs(4)),
    )
    .await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.concurrency = 3;
    config.timeouts.data_done = Duration::from_secs(10);
    let worker = common::start(config);
    let job = common::job("s@sender.test", &["a@slow.test"], &common::message("slow"));
    let mut c = Client::connect(bs.url()).await.unwrap();
    c.use_tube(TUBE_OUTBOUND).await.unwrap();
    // TTR 2 s: without touching, beanstalkd would hand the job out again mid-delivery.
    c.put(&job.encode(), 1024, Duration::ZERO, Duration::from_secs(2))
        .await
        .unwrap();

    let got = mx
        .wait_for(1, Duration::from_secs(15))
        .await
        .expect("delivered");
    assert_eq!(got.len(), 1);
    assert!(common::wait_tube_empty(&bs.url(), TUBE_OUTBOUND, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mx.connections(), 1, "only one worker task ever had the job");
    assert_eq!(mx.received().len(), 1);
    worker.stop().await;
}
