//! The shared service shell keeps mailman's shutdown as it was: on the shutdown signal a
//! session waiting for a command gets `421` and is closed, a session in the middle of DATA may
//! finish (and its message is accepted), `/health` answers 503 `draining` meanwhile, and then
//! everything stops. Real mailman, real sockets, on 127.0.171.x.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::common::{mailman_key, Net, MAILMAN_FQDN, WAIT};

const NET: Net = Net(171);

type Session = BufReader<TcpStream>;

/// One SMTP reply (the last line of a multi-line one), within [`WAIT`].
async fn reply(s: &mut Session) -> String {
    let mut last = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, s.read_line(&mut line))
            .await
            .expect("a reply within the wait")
            .expect("read a reply");
        if n == 0 {
            return last;
        }
        let more = line.as_bytes().get(3) == Some(&b'-');
        last = line;
        if !more {
            return last;
        }
    }
}

async fn command(s: &mut Session, line: &str) -> String {
    s.get_mut().write_all(line.as_bytes()).await.unwrap();
    reply(s).await
}

async fn connect(addr: SocketAddr) -> Session {
    let mut s = BufReader::new(TcpStream::connect(addr).await.expect("connect to mailman"));
    assert!(reply(&mut s).await.starts_with("220 "));
    assert!(command(&mut s, "EHLO client.e2e.test\r\n")
        .await
        .starts_with("250 "));
    s
}

async fn health(addr: SocketAddr) -> (u16, String) {
    let res = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("GET /health");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailman_says_421_finishes_data_and_is_unhealthy_while_draining() {
    let services = NET.services();
    // No post office listens: a finished message is spooled and accepted ("queued locally").
    let nowhere = SocketAddr::from((services, hedwig_testkit::net::free_port(services)));
    let spool = tempfile::tempdir().expect("spool dir");
    let config = mailman::Config {
        listen: vec![SocketAddr::from((services, 0)).to_string()],
        http_listen: SocketAddr::from((services, 0)).to_string(),
        fqdn: MAILMAN_FQDN.into(),
        key: Some(mailman_key()),
        postoffice: vec![format!("http://{nowhere}/")],
        spool_dir: spool.path().to_path_buf(),
        forward_deadline: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(20),
        ..mailman::Config::default()
    };
    let stop = CancellationToken::new();
    let running = mailman::start(config.check().expect("valid config"), stop.clone())
        .await
        .expect("mailman starts");
    let (smtp, http) = (running.smtp_addrs[0], running.http_addr.expect("http"));
    assert_eq!(health(http).await.0, 200);

    let mut idle = connect(smtp).await;
    let mut sending = connect(smtp).await;
    assert!(command(&mut sending, "MAIL FROM:<app@sender.e2e.test>\r\n")
        .await
        .starts_with("250 "));
    assert!(command(&mut sending, "RCPT TO:<alice@rcpt.e2e.test>\r\n")
        .await
        .starts_with("250 "));
    assert!(command(&mut sending, "DATA\r\n").await.starts_with("354 "));
    sending
        .get_mut()
        .write_all(b"Subject: in flight\r\n\r\nfirst half\r\n")
        .await
        .unwrap();

    stop.cancel();
    let goodbye = reply(&mut idle).await;
    assert!(
        goodbye.starts_with("421 "),
        "the idle session got {goodbye:?}"
    );

    // The DATA session keeps mailman draining: /health is 503 until it ends.
    let (status, body) = health(http).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"draining\""), "{body}");

    let done = command(&mut sending, "second half\r\n.\r\n").await;
    assert!(
        done.starts_with("250 "),
        "the message in DATA is accepted: {done:?}"
    );
    drop(sending);
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("mailman stops once the last session ended");
    let spooled = std::fs::read_dir(spool.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
        .count();
    assert_eq!(spooled, 1, "the accepted message stays in the spool");
}
