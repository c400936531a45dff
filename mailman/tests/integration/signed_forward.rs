//! Issue 11, F3/F7: mailman signs its posts, so a post office that requires signed posts
//! (`require_signed`) takes its mail; with `sign_posts: false` (for post offices older than
//! signing) the key travels in the body as before, which such a post office refuses.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::stack::{self, take_jobs};
use crate::common::{hello, spooled, Mailman};
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

/// The real post office in this process; every host must sign.
async fn postoffice(
    bs: &Beanstalkd,
    ip: [u8; 4],
    require_signed: bool,
) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = postoffice::Config {
        listen: addr,
        beanstalkd: vec![bs.url()],
        secret: Some(stack::SECRET.into()),
        shutdown_timeout: Duration::from_secs(2),
        // No ledger writer (it would write to /var/lib/hedwig); ledger tests turn it on.
        ledger: postoffice::config::LedgerConfig {
            writer: false,
            ..Default::default()
        },
        ..postoffice::Config::default()
    };
    config.default_policy.require_signed = require_signed;
    let stop = CancellationToken::new();
    tokio::spawn(postoffice::serve(config, listener, stop.clone()));
    for _ in 0..100 {
        if reqwest::get(format!("http://{addr}/health")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (format!("http://{addr}/"), stop)
}

fn config(dir: &std::path::Path, url: &str, sign: bool) -> mailman::Config {
    let mut cfg = common::config(dir, &[url.to_string()]);
    cfg.listen = vec!["127.0.116.10:0".into()];
    cfg.key = Some(stack::key());
    cfg.fqdn = stack::FQDN.into();
    cfg.sign_posts = sign;
    cfg
}

#[tokio::test]
async fn signed_posts_reach_a_post_office_that_requires_them() {
    let bs = Beanstalkd::start();
    let (url, _stop) = postoffice(&bs, [127, 0, 116, 1], true).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &url, true)).await;
    let mut c = hello(m.smtp).await;
    let reply = c
        .send_mail(
            "a@example.com",
            &["b@example.org"],
            b"Subject: s\r\n\r\nsigned\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let jobs = take_jobs(&bs, Duration::from_millis(300)).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].envelope.host, stack::FQDN);
    // mailman's key check at start is signed too.
    let poster = mailman::post::Poster::new(
        vec![url.parse().unwrap()],
        stack::FQDN.into(),
        stack::key(),
        true,
        &[],
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(poster.check_key(Duration::from_secs(5)).await, Ok(true));
    m.stop().await;
}

#[tokio::test]
async fn unsigned_posts_work_until_the_host_must_sign() {
    let bs = Beanstalkd::start();
    // A post office that does not require signing takes the old form.
    let (open_url, _stop_open) = postoffice(&bs, [127, 0, 116, 2], false).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &open_url, false)).await;
    let mut c = hello(m.smtp).await;
    let reply = c
        .send_mail(
            "a@example.com",
            &["b@example.org"],
            b"Subject: s\r\n\r\nold\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    assert_eq!(take_jobs(&bs, Duration::from_millis(300)).await.len(), 1);
    m.stop().await;

    // One that requires signing refuses it (401): mailman keeps the message in its spool.
    let (strict_url, _stop_strict) = postoffice(&bs, [127, 0, 116, 3], true).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &strict_url, false)).await;
    let mut c = hello(m.smtp).await;
    let reply = c
        .send_mail(
            "a@example.com",
            &["b@example.org"],
            b"Subject: s\r\n\r\nold\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued locally"), "{reply}");
    assert_eq!(spooled(dir.path()), 1);
    assert!(take_jobs(&bs, Duration::from_millis(300)).await.is_empty());
    m.stop().await;
}
