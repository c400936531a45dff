//! Address literals (`x@[192.0.2.1]`) are refused at intake unless `address_literals.allow`
//! names their network (issue 11 F10): a key holder must not make the worker open port 25 on
//! internal addresses.

use crate::common::{self, PostOffice};

use hedwig_testkit::Beanstalkd;

fn email(mailfrom: &str, rcpt: &str) -> serde_json::Value {
    serde_json::json!({
        "mailfrom": mailfrom,
        "rcpttos": ["ok@example.org", rcpt],
        "data": "From: app@example.com\r\nSubject: hi\r\n\r\nbody\r\n",
    })
}

#[tokio::test]
async fn literals_are_refused_by_default() {
    let po = PostOffice::start().await;
    for (mailfrom, rcpt, what) in [
        ("app@example.com", "x@[127.0.140.3]", "rcpttos"),
        ("app@example.com", "x@[IPv6:::1]", "rcpttos"),
        ("app@example.com", "x@[ipv6:fd00::25]", "rcpttos"),
        ("app@example.com", "x@[IPv6:::ffff:127.0.140.3]", "rcpttos"),
        ("app@[127.0.140.3]", "y@example.org", "mailfrom"),
    ] {
        let (status, body) = po.send(email(mailfrom, rcpt)).await;
        let error = body["error"].as_str().unwrap_or("");
        assert_eq!(status, 400, "{mailfrom} -> {rcpt}: {body}");
        assert!(
            error.starts_with(what) && error.contains("address literal"),
            "{error}"
        );
    }
    assert_eq!(po.ready_count().await, 0);
}

#[tokio::test]
async fn listed_networks_are_accepted() {
    let beanstalkd = Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.address_literals.allow = vec![
        "127.0.140.0/24".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ];
    let po = PostOffice::start_with(beanstalkd, config).await;
    for rcpt in [
        "x@[127.0.140.3]",
        "x@[IPv6:fd00::25]",
        "x@[IPv6:::ffff:127.0.140.9]",
    ] {
        let (status, body) = po.send(email("app@example.com", rcpt)).await;
        assert_eq!(status, 200, "{rcpt}: {body}");
    }
    for rcpt in ["x@[127.0.141.3]", "x@[IPv6:::1]"] {
        let (status, body) = po.send(email("app@example.com", rcpt)).await;
        assert_eq!(status, 400, "{rcpt}: {body}");
    }
    assert_eq!(po.ready_count().await, 3);
}
