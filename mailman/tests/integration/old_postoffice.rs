//! A new mailman in front of a post office older than signed requests (upgrade order
//! reversed): the old post office answers a signed post `400 field "key" is missing`. The
//! message must stay spooled and be retried (no 5xx to the client, no bounce), never be
//! refused for good; mailman does not send its key unasked either.

use std::time::Duration;

use crate::common::*;

const BODY: &[u8] = b"Subject: upgrade order\r\nFrom: a@example.com\r\n\r\nhello\r\n";

#[tokio::test]
async fn a_signed_post_refused_by_an_old_post_office_stays_spooled() {
    let po = StandIn::start(400).await;
    po.state.lock().unwrap().error = r#"field "key" is missing"#.into();
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
    // Kept: 250, spooled for a later try, no bounce spooled beside it.
    assert!(reply.starts_with("250"), "{reply}");
    assert!(wait_spooled(dir.path(), 1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spooled(dir.path()), 1, "exactly the message, no bounce");
    let posts = po.posts();
    assert!(!posts.is_empty());
    // Every post was signed: the key never travelled.
    assert!(posts.iter().all(|p| p.key.is_empty()));
    assert_eq!(po.state.lock().unwrap().unsigned, 0);
    // Once the post office takes it (upgraded), the spooled message goes through.
    po.set(200);
    assert!(po.wait_queued(1, Duration::from_secs(30)).await);
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    m.stop().await;
}
