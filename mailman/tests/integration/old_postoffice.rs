//! A new mailman in front of an older post office (upgrade order reversed).
//!
//! Older than signed requests: the old post office answers a signed post `400 field "key" is
//! missing`. The message must stay spooled and be retried (no 5xx to the client, no bounce),
//! never be refused for good; mailman does not send its key unasked either.
//!
//! Older than the raw form (issue 18): it has no `POST /raw` and answers 404. The same
//! message goes again at once as JSON to `/` and is queued (not refused, not delayed), and the
//! next messages go as JSON without a refused raw post first.

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

#[tokio::test]
async fn a_post_office_older_than_the_raw_form_gets_json_at_once() {
    let po = StandIn::start(200).await;
    po.state.lock().unwrap().no_raw = true;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    for i in 0..3 {
        let reply = c.send_mail("a@example.com", &["b@example.org"], BODY).await;
        // Queued while the client waits: the refused raw post cost one round trip, no retry.
        assert!(reply.starts_with("250"), "{i}: {reply}");
    }
    assert!(po.wait_queued(3, Duration::from_secs(10)).await);
    {
        let st = po.state.lock().unwrap();
        assert_eq!(st.raw_refused, 1, "one raw post refused, then JSON only");
        assert_eq!((st.posts.len(), st.raw_posts), (3, 0));
        for p in &st.posts {
            // mailman's Received: header, then the client's bytes, and nothing else (the
            // JSON form is made from the tail of the raw body).
            let posted = p.email.clone().into_message().unwrap();
            assert!(posted.starts_with(b"Received: from "), "{posted:?}");
            assert!(posted.ends_with(BODY));
            assert_eq!(posted.windows(9).filter(|w| w == b"Received:").count(), 1);
        }
    }
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    m.stop().await;
}

#[tokio::test]
async fn a_current_post_office_gets_the_raw_form() {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let mut c = hello(m.smtp).await;
    // 8-bit, not UTF-8: exact in the raw form (the JSON form would need base64).
    let body = b"Subject: 8-bit body\r\nFrom: a@example.com\r\n\r\ncaf\xe9 \xff\r\n";
    let reply = c.send_mail("a@example.com", &["b@example.org"], body).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(po.wait_queued(1, Duration::from_secs(10)).await);
    {
        let st = po.state.lock().unwrap();
        assert_eq!((st.posts.len(), st.raw_posts, st.raw_refused), (1, 1, 0));
        let posted = st.posts[0].email.clone().into_message().unwrap();
        assert!(posted.starts_with(b"Received: "));
        assert!(
            posted.ends_with(body),
            "{:?}",
            String::from_utf8_lossy(&posted)
        );
    }
    m.stop().await;
}
