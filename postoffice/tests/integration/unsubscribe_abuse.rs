//! `/unsubscribe/<token>` (public: mailbox providers and anyone holding a link reach it)
//! against hostile requests, on the real server: a token of 20,000 characters, one with an
//! encoded CR LF, a forged one, an oversized body, a thousand requests at once, and a real
//! token whose recipient and domain carry HTML: each a plain refusal or escaped text, and
//! nothing recorded but the one valid unsubscribe. docs/threat-model.md §7.
//!
//! Addresses: 127.0.190.20-29.

use std::net::Ipv4Addr;
use std::time::Duration;

use hedwig_core::unsubscribe::{Unsubscribe, UnsubscribeKey};
use hedwig_testkit::Beanstalkd;
use tokio_util::sync::CancellationToken;

use crate::common::config;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 190, 20);
const SECRET: &str = "unsubscribe-abuse-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unsubscribe_requests_are_refused_plainly() {
    let beanstalkd = Beanstalkd::start_on(IP);
    let mut config = config(&beanstalkd);
    config.unsubscribe = Some(postoffice::unsubscribe::UnsubscribeConfig {
        secret: Some(SECRET.into()),
        secret_file: None,
    });
    let listener = tokio::net::TcpListener::bind((IP, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(postoffice::serve(config, listener, stop.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://{addr}/unsubscribe");
    for _ in 0..200 {
        if http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = |url: String, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // Overlong, CR LF, forged: 400, bounded before decoding, the same words each time.
    for token in [
        "A".repeat(20_000),
        "abc%0D%0ABcc:%20x@evil.test".to_string(),
        "bm90IGEgdG9rZW4".to_string(),
    ] {
        let (status, body) = post(
            format!("{base}/{token}"),
            b"List-Unsubscribe=One-Click".to_vec(),
        )
        .await;
        assert!(
            status == 400 || status == 414 || status == 431,
            "{status}: {body}"
        );
        assert!(!body.contains("Bcc"), "{body}");
    }
    // A body past 4 KiB is not read.
    let key = UnsubscribeKey::new(SECRET);
    let hostile = Unsubscribe {
        queue_id: "018F2A3B4C5D0123456789AB".into(),
        sender_domain: "<b>news</b>.example.com".into(),
        list_id: String::new(),
        recipient: "\"<script>alert(1)</script>\"@example.org".into(),
        expires: hedwig_core::unix_now() + 3600,
    };
    let token = key.token(&hostile).unwrap();
    // The server answers 413 and closes without reading the rest, so the client may see
    // the 413 or its write cut off: either way the body was not taken.
    match http
        .post(format!("{base}/{token}"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
    {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    // What the token carries is shown as text, on the GET page and after the POST.
    let page = http.get(format!("{base}/{token}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("<b>news"),
        "{page}"
    );
    assert!(page.contains("&lt;script&gt;"), "{page}");
    // A thousand at once (a provider retrying, or a flood): every one answered.
    let flood: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn(post(
                format!("{base}/{token}"),
                b"List-Unsubscribe=One-Click".to_vec(),
            ))
        })
        .collect();
    let mut done = 0;
    for task in flood {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("<script>"), "{body}");
        done += 1;
    }
    assert_eq!(done, 1000);
    // ... and they are one event: the same id every time (the writer keeps one).
    let mut c = beanstalk::Client::connect(beanstalkd.url()).await.unwrap();
    c.watch("hedwig-events").await.unwrap();
    let mut ids = std::collections::HashSet::new();
    while let Ok(job) = c.reserve_with_timeout(Duration::ZERO).await {
        let batch = hedwig_queue::event::Batch::decode(&job.body).unwrap();
        ids.extend(batch.events.into_iter().map(|e| e.id));
        c.delete(job.id).await.unwrap();
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    stop.cancel();
}
