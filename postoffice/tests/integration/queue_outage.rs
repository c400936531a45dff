//! beanstalkd down: 503 and nothing half-queued; back up: the next request succeeds without a
//! restart. And the start-up check of `max-job-size`.

use crate::common;

use std::time::Duration;

use crate::common::{email, PostOffice};

#[tokio::test]
async fn beanstalkd_stopped_gives_503_then_recovers() {
    let mut po = PostOffice::start().await;
    let (status, _) = po.send(email(&["u@example.org"], "before")).await;
    assert_eq!(status, 200);

    po.beanstalkd.stop();
    let (status, body) = po.send(email(&["u@example.org"], "during")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("retry"));
    let health = po
        .http
        .get(format!("http://{}/health", po.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    po.beanstalkd.restart();
    // a restart may cost a failed call on a stale pooled connection; bounded retries
    let mut status = 0;
    for _ in 0..5 {
        status = po.send(email(&["u@example.org"], "after")).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let bodies: Vec<Vec<u8>> = po.jobs().await.into_iter().map(|j| j.message).collect();
    assert!(
        bodies.contains(&b"before".to_vec()),
        "binlog kept the first job"
    );
    assert!(bodies.contains(&b"after".to_vec()));
    assert!(!bodies.contains(&b"during".to_vec()));
}

#[tokio::test]
async fn refuses_to_start_when_job_size_is_too_small() {
    let beanstalkd = hedwig_testkit::Beanstalkd::start_with_max_job_size(65_535);
    let config = common::config(&beanstalkd);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = postoffice::serve(config, listener, Default::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("-z"), "{text}");
    assert!(text.contains("65535"), "{text}");
}

#[tokio::test]
async fn refuses_to_start_without_beanstalkd_or_secret() {
    let mut beanstalkd = hedwig_testkit::Beanstalkd::start();
    let mut config = common::config(&beanstalkd);
    beanstalkd.stop();
    config.startup_wait = Duration::from_millis(300);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = postoffice::serve(config.clone(), listener, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    config.secret = Some("short".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = postoffice::serve(config, listener, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn sigterm_style_shutdown_finishes_in_flight_requests() {
    let po = PostOffice::start().await;
    // A slow client: the body arrives in two parts with a pause; shutdown happens in between.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = hedwig_core::key::derive_key(common::SECRET, common::HOST);
    let form = serde_urlencoded::to_string([
        ("fqdn", common::HOST),
        ("key", key.as_str()),
        ("email", &email(&["u@example.org"], "slow").to_string()),
    ])
    .unwrap();
    let mut stream = tokio::net::TcpStream::connect(po.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        form.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&form.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    po.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&form.as_bytes()[10..]).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let result = tokio::time::timeout(Duration::from_secs(5), po.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "server stopped cleanly");
}
