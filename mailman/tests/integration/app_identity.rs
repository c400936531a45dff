//! The app identity (issue 17) goes from the spool to the post office: a spooled message's
//! `app` arrives as the post's `app` field, and a spool file written by an older mailman (no
//! `app` in its header) is still read and posted, without one. The identity a session gets
//! (an SMTP AUTH login) is tested end to end in `smtp_auth.rs`. The same holds for the header
//! fix-ups (issue 19): a spooled message's `fixups` arrive as the post's `fixups` field, and
//! the older file is posted without any.

use std::time::Duration;

use hedwig_core::wire::{App, AppSource};

use crate::common::*;

const BODY: &[u8] = b"Received: from x\r\nSubject: spooled\r\n\r\nhi\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_app_reaches_the_post_office_and_old_files_still_post() {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    // An older mailman's header line: no `app` field.
    let old = format!(
        "{{\"v\":1,\"id\":\"OLDMAILMAN1\",\"mail_from\":\"a@example.com\",\"rcpt_to\":[\"b@example.org\"],\
\"client\":\"127.0.0.1\",\"received_at\":{},\"size\":{}}}\n",
        hedwig_core::unix_now(),
        BODY.len()
    );
    let mut file = old.into_bytes();
    file.extend_from_slice(BODY);
    std::fs::write(dir.path().join("OLDMAILMAN1.msg"), &file).unwrap();
    let app = App {
        name: "billing".into(),
        source: AppSource::Login,
        image: None,
        compose_project: None,
        compose_service: None,
        lane: Some("transactional".into()),
    };
    let header = mailman::spool::SpoolHeader {
        v: 1,
        id: "WITHAPP1".into(),
        mail_from: "a@example.com".into(),
        rcpt_to: vec!["b@example.org".into()],
        client: "127.0.0.1".into(),
        received_at: hedwig_core::unix_now(),
        size: BODY.len() as u64,
        app: Some(app.clone()),
        fixups: vec!["date".into(), "message-id".into(), "bcc".into()],
    };
    let mut file = serde_json::to_vec(&header).unwrap();
    file.push(b'\n');
    file.extend_from_slice(BODY);
    std::fs::write(dir.path().join("WITHAPP1.msg"), &file).unwrap();

    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    assert!(po.wait_queued(2, Duration::from_secs(10)).await);
    let posts = po.posts();
    let by_id = |id: &str| {
        posts
            .iter()
            .find(|p| p.id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no post of {id}"))
            .clone()
    };
    assert_eq!(by_id("WITHAPP1").app, Some(app));
    assert_eq!(by_id("OLDMAILMAN1").app, None);
    assert_eq!(by_id("WITHAPP1").fixups, ["date", "message-id", "bcc"]);
    assert!(by_id("OLDMAILMAN1").fixups.is_empty());
    assert_eq!(
        by_id("OLDMAILMAN1").email.clone().into_message().unwrap(),
        BODY
    );
    assert!(wait_spooled(dir.path(), 0, Duration::from_secs(5)).await);
    m.stop().await;
}
