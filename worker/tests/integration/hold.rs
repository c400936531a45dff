//! A held sending host's mail is moved, untouched, into the held tube instead of delivered;
//! other hosts' mail goes out as usual.

use crate::common;

use std::time::Duration;

use beanstalk::Client;
use hedwig_queue::hold::HoldList;
use hedwig_queue::job::Job;
use hedwig_queue::tubes::{TUBE_HELD, TUBE_HOLDS};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::Beanstalkd;

/// Stores the hold list the way `postoffice hold` does: one buried job in the holds tube.
async fn hold(beanstalkd: &str, host: &str) {
    let mut list = HoldList::new();
    list.hold(host).unwrap();
    let mut c = Client::connect(beanstalkd).await.unwrap();
    c.use_tube(TUBE_HOLDS).await.unwrap();
    c.watch(TUBE_HOLDS).await.unwrap();
    c.ignore("default").await.unwrap();
    c.put(&list.encode(), 0, Duration::ZERO, Duration::from_secs(60))
        .await
        .unwrap();
    let job = c
        .reserve_with_timeout(Duration::from_secs(1))
        .await
        .unwrap();
    c.bury(job.id, 0).await.unwrap();
}

#[tokio::test]
async fn held_host_mail_waits_in_the_held_tube() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(Zone::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let mut config = common::config(&bs.url(), dns.addr());
    config.capture_maildir = Some(maildir.clone());
    hold(&bs.url(), "Web1.Example.test").await;

    let held = common::job("s@sender.test", &["a@x.test"], &common::message("held"));
    let mut free = common::job("s@sender.test", &["b@x.test"], &common::message("free"));
    free.envelope.host = "web2.example.test".into();
    common::enqueue(&bs.url(), &held).await;
    common::enqueue(&bs.url(), &free).await;
    let worker = common::start(config);
    assert!(
        common::wait_tube_empty(
            &bs.url(),
            hedwig_queue::tubes::TUBE_OUTBOUND,
            Duration::from_secs(10)
        )
        .await
    );
    // the free host's message was delivered, the held one was not
    let files: Vec<_> = std::fs::read_dir(maildir.join("new")).unwrap().collect();
    assert_eq!(files.len(), 1);
    let data = std::fs::read(files.into_iter().next().unwrap().unwrap().path()).unwrap();
    assert!(data.ends_with(&free.message));
    // the held one waits in the held tube, byte for byte
    let mut c = Client::connect(bs.url()).await.unwrap();
    c.watch(TUBE_HELD).await.unwrap();
    c.ignore("default").await.unwrap();
    let job = c
        .reserve_with_timeout(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(Job::decode(&job.body).unwrap(), held);
    worker.stop().await;
}
