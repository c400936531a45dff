//! A server that answers nonsense or announces an oversized body: a Protocol error, the
//! connection is dropped, and the next call reconnects instead of reading garbage.

use std::time::Duration;

use beanstalk::{Client, Config, Error};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Accepts `replies.len()` connections; on the i-th, answers every line with `replies[i]`.
async fn fake_server(replies: Vec<&'static [u8]>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        for reply in replies {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                for _ in 0..10 {
                    if lines.next_line().await.ok().flatten().is_none() {
                        break;
                    }
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn nonsense_and_oversized_replies() {
    let addr = fake_server(vec![
        b"HELLO THERE\r\n",
        b"RESERVED 1 2000\r\n",
        b"USING default\r\n",
        b"OK 2\r\n---nope\r\n",
    ])
    .await;
    let config = Config {
        max_body: 1000,
        io_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let mut c = Client::connect_with(addr, config).await.unwrap();

    let err = c.stats().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("HELLO")),
        "{err}"
    );
    assert!(err.is_connection_error());
    assert!(!c.is_connected());

    // Second connection: a body over max_body is refused before it is read.
    let err = c
        .reserve_with_timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("limit")),
        "{err}"
    );
    assert!(!c.is_connected());

    // Third: a well-formed reply of the wrong kind for the command.
    let err = c.delete(1).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("USING")),
        "{err}"
    );
    assert!(!c.is_connected());
    // Fourth: the announced body is not followed by CRLF.
    let err = c.list_tubes().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("CRLF")),
        "{err}"
    );

    // No fifth server: the reconnect itself fails with an I/O error.
    let err = c.stats().await.unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err}");
}
