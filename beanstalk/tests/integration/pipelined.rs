//! `reserve_ready` and `delete_all`: many commands in one write against the real server,
//! replies matched to commands in order, failures per command, and the connection still in
//! step afterwards.

use crate::common;

use std::time::Duration;

use beanstalk::{Client, Error};

const TTR: Duration = Duration::from_secs(60);

#[tokio::test]
async fn reserve_ready_takes_what_is_ready_and_delete_all_reports_each_id() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    let mut put = Vec::new();
    for i in 0..5u8 {
        // Bodies with CRLF and the reply words inside, to check the framing.
        let body = format!("job {i}\r\nTIMED_OUT\r\nRESERVED 1 2\r\n");
        put.push(
            c.put(body.as_bytes(), 10, Duration::ZERO, TTR)
                .await
                .unwrap(),
        );
    }

    // More asked than ready: the 5 jobs in order, the rest TIMED_OUT, nothing left over.
    let ready = c.reserve_ready(8).await.unwrap();
    assert!(!ready.deadline_soon);
    let ids: Vec<u64> = ready.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, put);
    assert_eq!(
        ready.jobs[3].body,
        &b"job 3\r\nTIMED_OUT\r\nRESERVED 1 2\r\n"[..]
    );
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.get("current-jobs-reserved"), Some("5"));

    // Fewer asked than ready: only that many are reserved.
    let mut c2 = Client::connect(server.url()).await.unwrap();
    let extra: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(c2.put(b"x", 10, Duration::ZERO, TTR).await.unwrap());
        }
        v
    };
    assert_eq!(c2.reserve_ready(2).await.unwrap().jobs.len(), 2);
    assert_eq!(
        c.stats().await.unwrap().get("current-jobs-ready"),
        Some("1")
    );

    // One id this connection does not hold (reserved by c2), one that never existed.
    let mut ask = put.clone();
    ask.push(extra[0]);
    ask.push(999_999);
    let out = c.delete_all(&ask).await.unwrap();
    assert_eq!(out.len(), 7);
    assert!(out[..5].iter().all(|r| r.is_ok()), "{out:?}");
    assert!(matches!(out[5], Err(Error::NotFound)), "{:?}", out[5]);
    assert!(matches!(out[6], Err(Error::NotFound)), "{:?}", out[6]);
    for id in &put {
        assert!(matches!(c.peek(*id).await, Err(Error::NotFound)));
    }
    // Still in step: a plain command after the pipelines gets its own reply.
    assert_eq!(c.peek_ready().await.unwrap().id, extra[2]);
    // An empty tube: every reserve times out.
    let mut c3 = Client::connect(server.url()).await.unwrap();
    c3.watch("empty").await.unwrap();
    c3.ignore("default").await.unwrap();
    let ready = c3.reserve_ready(4).await.unwrap();
    assert!(ready.jobs.is_empty() && !ready.deadline_soon);
    // An empty list is a no-op.
    assert!(c.delete_all(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn reserve_ready_reports_deadline_soon() {
    let server = common::start();
    let mut c = Client::connect(server.url()).await.unwrap();
    // A TTR of 1 s is inside beanstalkd's one-second safety margin at once.
    c.put(b"short", 10, Duration::ZERO, Duration::from_secs(1))
        .await
        .unwrap();
    c.put(b"other", 10, Duration::ZERO, TTR).await.unwrap();
    let held = c.reserve_with_timeout(Duration::ZERO).await.unwrap();
    assert_eq!(held.body, &b"short"[..]);
    let ready = c.reserve_ready(2).await.unwrap();
    assert!(ready.deadline_soon, "{ready:?}");
}

/// A server that answers only the first of the pipelined commands and closes, then (on
/// the next connection) answers nothing: the cut exchange is one connection error, and a
/// pipeline cancelled half-way leaves the connection to be replaced, not reused out of step.
#[tokio::test]
async fn a_pipeline_cut_or_cancelled_half_way_drops_its_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            if n == 0 {
                let _ = socket.write_all(b"DELETED\r\n").await;
                drop(socket);
            } else {
                held.push(socket); // silent from here on
            }
        }
    });
    let mut c = Client::connect(addr.to_string()).await.unwrap();
    let err = c.delete_all(&[1, 2, 3]).await.unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    // Cancelled while waiting for the replies (a second connection)...
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.delete_all(&[4, 5]))
            .await
            .is_err()
    );
    // ...so the next call opens a third instead of reading the old replies as its own.
    let _ = tokio::time::timeout(Duration::from_millis(200), c.reserve_ready(2)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
