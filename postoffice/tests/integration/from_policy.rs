//! The From: header is held to the host's `allowed_sender_domains` like the envelope sender
//! (issue 11 F1): a host allowed only `tenant-a.test` cannot post a message whose From: is in
//! `tenant-b.test` (or a subdomain of an exact entry, or in a group, or behind the null
//! sender), and a message with two From: fields is refused outright.

use crate::common::{self, PostOffice, HOST};

use hedwig_testkit::Beanstalkd;
use postoffice::config::HostPolicy;

const OPEN_HOST: &str = "open.example.com";

async fn start() -> PostOffice {
    let beanstalkd = Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    config.hosts.insert(
        HOST.into(),
        HostPolicy {
            allowed_sender_domains: vec!["tenant-a.test".into(), "*.pattern.test".into()],
            ..HostPolicy::default()
        },
    );
    PostOffice::start_with(beanstalkd, config).await
}

fn email(mailfrom: &str, headers: &str) -> serde_json::Value {
    serde_json::json!({
        "mailfrom": mailfrom,
        "rcpttos": ["rcpt@example.org"],
        "data": format!("{headers}To: rcpt@example.org\r\nSubject: hi\r\n\r\nbody\r\n"),
    })
}

async fn post_as(po: &PostOffice, host: &str, email: serde_json::Value) -> (u16, String) {
    let key = hedwig_core::key::derive_key(common::SECRET, host);
    let email = email.to_string();
    let (status, body) = po
        .post_form(&[("fqdn", host), ("key", &key), ("email", &email)])
        .await;
    (status, body["error"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn from_domains_outside_the_policy_are_refused() {
    let po = start().await;
    let mut wrong = Vec::new();
    for (what, mailfrom, headers, want, reason) in [
        (
            "envelope tenant-a, From tenant-b",
            "app@tenant-a.test",
            "From: CEO <ceo@tenant-b.test>\r\n",
            403,
            "tenant-b.test",
        ),
        (
            "From in a subdomain of an exact entry",
            "app@tenant-a.test",
            "From: ceo@sub.tenant-a.test\r\n",
            403,
            "sub.tenant-a.test",
        ),
        (
            "null sender, From tenant-b",
            "<>",
            "From: ceo@tenant-b.test\r\n",
            403,
            "tenant-b.test",
        ),
        (
            "two From fields",
            "app@tenant-a.test",
            "From: app@tenant-a.test\r\nFrom: ceo@tenant-b.test\r\n",
            400,
            "From:",
        ),
        (
            "two From fields, both allowed",
            "app@tenant-a.test",
            "From: app@tenant-a.test\r\nfrom : other@tenant-a.test\r\n",
            400,
            "From:",
        ),
        (
            "a second From hidden behind a bare CR",
            "app@tenant-a.test",
            "From: app@tenant-a.test\r\nX-A: 1\rFrom: ceo@tenant-b.test\r\n",
            400,
            "From:",
        ),
        (
            "a foreign mailbox in a list",
            "app@tenant-a.test",
            "From: app@tenant-a.test, ceo@tenant-b.test\r\n",
            403,
            "tenant-b.test",
        ),
        (
            "a foreign mailbox in a group",
            "app@tenant-a.test",
            "From: board: app@tenant-a.test, ceo@tenant-b.test;\r\n",
            403,
            "tenant-b.test",
        ),
        (
            "a folded From",
            "app@tenant-a.test",
            "From: \"Someone at tenant-a.test\"\r\n <ceo@tenant-b.test>\r\n",
            403,
            "tenant-b.test",
        ),
        (
            "a From without a domain",
            "app@tenant-a.test",
            "From: root\r\n",
            403,
            "root",
        ),
    ] {
        let (status, error) = post_as(&po, HOST, email(mailfrom, headers)).await;
        if status != want || !error.contains(reason) {
            wrong.push(format!("{what}: {status} {error:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as they should be: {wrong:#?}"
    );
    assert_eq!(po.ready_count().await, 0, "nothing was queued");

    // What the policy allows still goes through, the null sender included.
    for (mailfrom, headers) in [
        ("app@tenant-a.test", "From: App <app@tenant-a.test>\r\n"),
        ("<>", "From: MAILER-DAEMON@tenant-a.test\r\n"),
        ("app@tenant-a.test", "From: a@news.pattern.test\r\n"),
        ("app@tenant-a.test", "From: a@pattern.test\r\n"),
        ("app@tenant-a.test", ""),
    ] {
        let (status, error) = post_as(&po, HOST, email(mailfrom, headers)).await;
        assert_eq!(status, 200, "{headers}: {error}");
    }
    assert_eq!(po.ready_count().await, 5);
    // The jobs say which domains the worker may sign for: the From: domain when the list
    // names it (and its parents that the list also covers); nothing without a From: address.
    let mut signing: Vec<Option<Vec<String>>> = po
        .jobs()
        .await
        .into_iter()
        .map(|j| j.envelope.dkim_domains)
        .collect();
    signing.sort();
    let some = |d: &[&str]| Some(d.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        signing,
        [
            some(&[]),
            some(&["news.pattern.test", "pattern.test"]),
            some(&["pattern.test"]),
            some(&["tenant-a.test"]),
            some(&["tenant-a.test"]),
        ]
    );

    // A host without a list may still use any From: (but gets no signature, see below).
    let (status, error) = post_as(
        &po,
        OPEN_HOST,
        email("app@anything.test", "From: ceo@tenant-b.test\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{error}");
    let open_job = po
        .jobs()
        .await
        .into_iter()
        .find(|j| j.envelope.host == OPEN_HOST)
        .expect("queued");
    assert_eq!(open_job.envelope.dkim_domains, Some(vec![]), "never signed");
    // ... but never two From: fields.
    let (status, _) = post_as(
        &po,
        OPEN_HOST,
        email("app@anything.test", "From: a@x.test\r\nFrom: b@y.test\r\n"),
    )
    .await;
    assert_eq!(status, 400);
}
