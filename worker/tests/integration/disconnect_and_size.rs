//! A connection lost after the final dot is a temporary failure (the message may or may not
//! have arrived: retry); a message over the server's SIZE fails permanently before MAIL.

use crate::common;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::{Behaviour, Phase};
use hedwig_testkit::Beanstalkd;
use worker::plan::Status;

#[tokio::test]
async fn disconnect_in_data_defers_and_oversize_bounces() {
    let dns = DnsServer::start(
        Zone::new()
            .mx("drop.test", 10, "mx.drop.test")
            .a("mx.drop.test", "127.0.4.170")
            .mx("small.test", 10, "mx.small.test")
            .a("mx.small.test", "127.0.4.171"),
    )
    .await;
    let dropper = common::mx("127.0.4.170", Behaviour::new().drop_at(Phase::DataEnd)).await;
    let small = common::mx("127.0.4.171", Behaviour::new().size(1000)).await;
    let bs = Beanstalkd::start();
    let d = common::deliverer(common::config(&bs.url(), dns.addr()));

    let out = common::deliver(&d, "drop.test", &["a@drop.test", "b@drop.test"]).await;
    for (rcpt, o) in &out {
        assert_eq!(
            (o.status, o.reason.as_str()),
            (Status::Deferred, "closed"),
            "{rcpt}: {o:?}"
        );
        assert!(o.response.contains("end of DATA"), "{}", o.response);
    }
    assert!(dropper.received().is_empty());

    let out = common::deliver(&d, "small.test", &["a@small.test"]).await;
    let o = &out[0].1;
    assert_eq!(
        (o.status, o.reason.as_str(), o.dsn.as_str()),
        (Status::Bounced, "size", "5.3.4"),
        "{o:?}"
    );
    assert!(!small.commands().iter().any(|c| c.starts_with("MAIL")));
}
