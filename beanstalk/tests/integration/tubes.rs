//! use / watch / ignore, the list commands, pause-tube, and tube name validation.

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Error};

#[tokio::test]
async fn use_watch_ignore_and_lists() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    assert_eq!(c.list_tube_used().await.unwrap(), "default");
    assert_eq!(c.list_tubes_watched().await.unwrap(), vec!["default"]);

    c.use_tube("mail.out").await.unwrap();
    assert_eq!(c.list_tube_used().await.unwrap(), "mail.out");
    assert_eq!(c.used_tube(), "mail.out");
    let id = c
        .put(b"x", 0, Duration::ZERO, Duration::from_secs(5))
        .await
        .unwrap();

    assert_eq!(c.watch("mail.out").await.unwrap(), 2);
    assert_eq!(
        c.watch("mail.out").await.unwrap(),
        2,
        "watching twice counts once"
    );
    assert_eq!(c.ignore("default").await.unwrap(), 1);
    assert!(matches!(c.ignore("mail.out").await, Err(Error::NotIgnored)));
    assert!(c.is_connected(), "NOT_IGNORED keeps the connection");
    assert_eq!(c.list_tubes_watched().await.unwrap(), vec!["mail.out"]);
    assert_eq!(c.watched_tubes(), ["mail.out".to_string()]);

    let mut tubes = c.list_tubes().await.unwrap();
    tubes.sort();
    assert_eq!(tubes, vec!["default", "mail.out"]);

    let job = c
        .reserve_with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(job.id, id);
    c.delete(id).await.unwrap();

    // pause-tube: a put job is not handed out while the tube is paused.
    c.pause_tube("mail.out", Duration::from_secs(60))
        .await
        .unwrap();
    c.put(b"y", 0, Duration::ZERO, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(
        c.reserve_with_timeout(Duration::ZERO).await,
        Err(Error::TimedOut)
    ));
    assert!(matches!(
        c.pause_tube("nosuch", Duration::from_secs(1)).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn invalid_tube_names_are_refused_before_sending() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    let long = "x".repeat(201);
    for bad in ["", "-lead", "sp ace", "new\r\nline", long.as_str()] {
        assert!(
            matches!(c.use_tube(bad).await, Err(Error::InvalidTubeName(_))),
            "{bad:?}"
        );
        assert!(
            matches!(c.watch(bad).await, Err(Error::InvalidTubeName(_))),
            "{bad:?}"
        );
    }
    assert!(c.is_connected());
    assert_eq!(c.list_tube_used().await.unwrap(), "default");
    c.use_tube(&"y".repeat(200)).await.unwrap();
    assert_eq!(c.list_tube_used().await.unwrap(), "y".repeat(200));
}
