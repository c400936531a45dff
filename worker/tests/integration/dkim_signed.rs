//! With a DKIM key configured for the From: domain, delivered mail carries a signature for
//! it in front of the unchanged message. (Independent verification is tested in
//! hedwig-message.)

use crate::common;

use std::time::Duration;

use hedwig_message::dkim::{generate, Algorithm, DkimConfig, DkimKey};
use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn signed_with_the_sender_domain_key() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.110"),
    )
    .await;
    let mx = common::mx("127.0.4.110", Behaviour::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate(Algorithm::Ed25519).unwrap();
    let key_file = dir.path().join("ed.pem");
    std::fs::write(&key_file, key.private_pem).unwrap();
    let mut config = common::config(&bs.url(), dns.addr());
    config.dkim = DkimConfig {
        keys: vec![DkimKey {
            domain: "sender.test".into(),
            selector: "s1".into(),
            algorithm: None,
            key_file,
        }],
        default_domain: None,
    };
    let worker = common::start(config);
    let message = common::message("dkim");
    common::enqueue(
        &bs.url(),
        &common::job("sender@sender.test", &["a@example.test"], &message),
    )
    .await;
    let got = mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("delivered");
    let data = &got[0].data;
    assert!(
        data.starts_with(b"DKIM-Signature:"),
        "{}",
        String::from_utf8_lossy(data)
    );
    let text = String::from_utf8_lossy(data);
    assert!(text.contains("d=sender.test"), "{text}");
    assert!(text.contains("s=s1"), "{text}");
    assert!(data.ends_with(&message), "the message itself is unchanged");
    worker.stop().await;
}
