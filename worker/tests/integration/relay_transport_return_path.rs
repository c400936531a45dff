//! relayhost takes all mail; a per-domain transport overrides it; a fixed return path
//! replaces the envelope sender (globally or per sending host).

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn relayhost_transport_and_return_path() {
    let bs = Beanstalkd::start();
    // No records at all for the recipient domains: routing must not need them.
    let dns = DnsServer::start(Zone::new().a("smarthost.test", "127.0.4.120")).await;
    let relay = common::mx("127.0.4.120", Behaviour::new()).await;
    let special = common::mx("127.0.4.121", Behaviour::new()).await;
    let mut config = common::config(&bs.url(), dns.addr());
    config.relayhost = Some("[smarthost.test]".into());
    config
        .transports
        .insert("special.test".into(), "[127.0.4.121]:25".into());
    config.return_path.default = Some("bounces@relay.test".into());
    config
        .return_path
        .hosts
        .insert("web2.example.test".into(), "web2@relay.test".into());
    let worker = common::start(config);

    let message = common::message("relay");
    common::enqueue(
        &bs.url(),
        &common::job("app@web.test", &["a@anywhere.test"], &message),
    )
    .await;
    let mut from_web2 = common::job("app@web.test", &["b@special.test"], &message);
    from_web2.envelope.host = "web2.example.test".into();
    common::enqueue(&bs.url(), &from_web2).await;

    let got = relay
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("via relayhost");
    assert_eq!(got[0].rcpt_to, ["a@anywhere.test"]);
    assert_eq!(got[0].mail_from, "bounces@relay.test");
    let got = special
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("via transport");
    assert_eq!(got[0].rcpt_to, ["b@special.test"]);
    assert_eq!(got[0].mail_from, "web2@relay.test");
    assert_eq!(relay.received().len(), 1);
    worker.stop().await;
}
