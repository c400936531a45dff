//! A session driven through an in-memory stream (no socket): the whole pipelined
//! transaction is written at once, and the replies come back in order.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn pipelined_session_over_a_duplex_stream() {
    let po = StandIn::start(200).await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailman::start(config(dir.path(), &[po.url()])).await;
    let core = m.running.as_ref().unwrap().core.clone();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let token = tokio_util::sync::CancellationToken::new();
    let session = {
        let core = core.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let config = mailman::server::session_config(&core);
            mailman::server::serve(
                &core,
                &config,
                Box::new(server),
                "172.17.0.9:40000".parse().unwrap(),
                &token,
            )
            .await
        })
    };
    client
        .write_all(
            b"EHLO app.container\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<x@example.org>\r\n\
DATA\r\nSubject: in memory\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        )
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        vec!["220", "250", "250", "250", "354", "250", "221"],
        "{out}"
    );
    assert!(out.contains("250 2.0.0 Ok: queued as Q0000"), "{out}");
    session.await.unwrap().unwrap();
    let posts = po.posts();
    let message = posts[0].email.clone().into_message().unwrap();
    assert!(String::from_utf8_lossy(&message)
        .starts_with("Received: from app.container ([172.17.0.9])\r\n"));
    m.stop().await;
}
