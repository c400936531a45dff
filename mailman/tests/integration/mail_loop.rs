//! Issue 11 F2 (mailman's part), mail loops, against the real `mailman` binary: a message
//! whose header would hold more than `max_received_headers` (default 50, Postfix's
//! `hopcount_limit`) `Received:` fields, counting the one mailman adds, is refused with
//! `554 5.4.6` before it is spooled or posted, with one log line; one hop fewer passes.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::common::real::{connect_from, read_until, send, RealMailman};
use crate::common::StandIn;

const MM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 102, 1);
const MM_IP_2: Ipv4Addr = Ipv4Addr::new(127, 0, 102, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 102, 2);

async fn post_with_hops(mailman: &RealMailman, hops: usize) -> String {
    let mut c = connect_from(CLIENT, mailman.smtp).await;
    send(
        &mut c,
        b"EHLO loop.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
    )
    .await;
    let head = read_until(&mut c, Duration::from_secs(10), |t| t.contains("354 ")).await;
    assert!(head.contains("354 "), "{head:?}");
    let mut body = String::new();
    for i in 0..hops {
        body.push_str(&format!(
            "Received: from hop{i}.test ([127.0.0.1])\r\n\tby mx{i}.test with ESMTP id X{i};\r\n\tTue, 1 Dec 2026 10:00:00 +0000\r\n"
        ));
    }
    body.push_str(&format!(
        "Subject: {hops} hops\r\n\r\nReceived: in the body, not counted\r\n.\r\nQUIT\r\n"
    ));
    send(&mut c, body.as_bytes()).await;
    read_until(&mut c, Duration::from_secs(10), |t| t.contains("221 ")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_received_headers_is_refused_with_554_5_4_6() {
    let po = StandIn::start(200).await;
    let mailman = RealMailman::start(MM_IP, &po.url(), &[]).await;
    // 49 + mailman's own = 50: within the limit
    let ok = post_with_hops(&mailman, 49).await;
    assert!(ok.starts_with("250 "), "{ok:?}");
    let refused = post_with_hops(&mailman, 50).await;
    assert!(
        refused.starts_with("554 5.4.6 too many hops (mail loop?)\r\n"),
        "{refused:?}"
    );
    let many = post_with_hops(&mailman, 400).await;
    assert!(many.starts_with("554 5.4.6 "), "{many:?}");
    assert!(po.wait_queued(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        po.posts().len(),
        1,
        "the looping messages were never posted"
    );
    let log = mailman.stop();
    assert_eq!(
        log.matches("mail loop?").count(),
        2,
        "one line per refused message:\n{log}"
    );
    assert!(
        log.contains("51 Received: headers, max_received_headers is 50"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hop_limit_is_a_setting() {
    let po = StandIn::start(200).await;
    let mailman =
        RealMailman::start(MM_IP_2, &po.url(), &[("HEDWIG_MAX_RECEIVED_HEADERS", "3")]).await;
    assert!(post_with_hops(&mailman, 2).await.starts_with("250 "));
    assert!(post_with_hops(&mailman, 3).await.starts_with("554 5.4.6 "));
    drop(mailman);
}
