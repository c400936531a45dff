//! On shutdown a delivery that does not finish within the grace period is abandoned and its
//! job released to the queue, ready for the next worker; nothing is lost.

use crate::common;

use std::time::Duration;

use hedwig_queue::tubes::TUBE_OUTBOUND;
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Phase};
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn stalled_delivery_is_released_on_shutdown() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("stall.test", 10, "mx.stall.test")
            .a("mx.stall.test", "127.0.4.150"),
    )
    .await;
    let mx = common::mx(
        "127.0.4.150",
        Behaviour::new().stall_at(Phase::DataEnd, Duration::from_secs(20)),
    )
    .await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.timeouts.data_done = Duration::from_secs(30);
    config.shutdown_grace = Duration::from_millis(500);
    let worker = common::start(config);
    common::enqueue(
        &bs.url(),
        &common::job(
            "s@sender.test",
            &["a@stall.test"],
            &common::message("stall"),
        ),
    )
    .await;
    assert!(mx.wait_for_connections(1, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        common::tube_counts(&bs.url(), TUBE_OUTBOUND).await,
        (0, 0, 1, 0)
    );
    let started = std::time::Instant::now();
    worker.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        common::tube_counts(&bs.url(), TUBE_OUTBOUND).await,
        (1, 0, 0, 0)
    );
    assert!(mx.received().is_empty());
}
