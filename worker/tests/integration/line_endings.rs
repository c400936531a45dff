//! A message with bare LFs (as the original Python hedwig clients post them) and a line over
//! 998 octets goes out with CRLF line ends and the long line folded.

use crate::common;

use std::time::Duration;

use hedwig_testkit::dns::{DnsServer, Zone};
use hedwig_testkit::smtp::Behaviour;
use hedwig_testkit::Beanstalkd;

#[tokio::test]
async fn bare_lf_and_long_lines_are_fixed_on_the_wire() {
    let bs = Beanstalkd::start();
    let dns = DnsServer::start(
        Zone::new()
            .mx("example.test", 10, "mx.example.test")
            .a("mx.example.test", "127.0.4.180"),
    )
    .await;
    let mx = common::mx("127.0.4.180", Behaviour::new()).await;
    let worker = common::start(common::config(&bs.url(), dns.addr()));

    let long = "x".repeat(1500);
    let message = format!("Subject: old client\n\nline one\n{long}\n.dot line\nend\n");
    common::enqueue(
        &bs.url(),
        &common::job("s@sender.test", &["a@example.test"], message.as_bytes()),
    )
    .await;
    let got = mx
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("delivered");
    let data = &got[0].data;
    let expected = format!(
        "Subject: old client\r\n\r\nline one\r\n{}\r\n {}\r\n.dot line\r\nend\r\n",
        &long[..998],
        &long[998..]
    );
    assert_eq!(String::from_utf8_lossy(data), expected);
    assert!(data.split(|&b| b == b'\n').all(|l| l.len() <= 999));
    worker.stop().await;
}
