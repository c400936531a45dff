//! Capture mode writes each message into a Maildir instead of delivering it.

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn messages_land_in_the_maildir() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(Zone::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let mut config = common::config(&bs.url(), dns.addr());
    config.capture_maildir = Some(maildir.clone());
    config.hostname = String::new();
    let worker = common::start(config);
    let message = common::message("capture");
    common::enqueue(
        &bs.url(),
        &common::job(
            "s@sender.test",
            &["a@nowhere.test", "b@elsewhere.test"],
            &message,
        ),
    )
    .await;
    assert!(
        common::wait_tube_empty(
            &bs.url(),
            hedwig_queue::tubes::TUBE_OUTBOUND,
            Duration::from_secs(10)
        )
        .await
    );
    let files: Vec<_> = std::fs::read_dir(maildir.join("new")).unwrap().collect();
    // One file per recipient domain.
    assert_eq!(files.len(), 2);
    for f in files {
        let data = std::fs::read(f.unwrap().path()).unwrap();
        assert!(data.starts_with(b"Return-Path: <s@sender.test>\r\nDelivered-To: "));
        assert!(data.ends_with(&message));
    }
    assert!(dns.queries().is_empty(), "capture does no DNS");
    worker.stop().await;
}
