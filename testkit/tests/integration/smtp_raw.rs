//! The SMTP receiver's scripted replies, drops and stalls, seen byte by byte over a raw
//! TcpStream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hedwig_testkit::smtp::{Behaviour, Extension, Phase, SmtpReceiver};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(5);

/// A minimal SMTP client: writes raw bytes, reads one (possibly multi-line) reply.
struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &str) {
        self.stream
            .get_mut()
            .write_all(bytes.as_bytes())
            .await
            .unwrap();
    }

    /// The next reply, lines joined with `\n`; "" when the server closed the connection.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        for _ in 0..50 {
            let mut line = String::new();
            let n = tokio::time::timeout(T, self.stream.read_line(&mut line))
                .await
                .expect("a reply within 5 s")
                .unwrap();
            if n == 0 {
                break;
            }
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        lines.join("\n")
    }

    /// True when the server closed the connection (EOF within 5 s).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(T, self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(0))
        )
    }
}

async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    Client {
        stream: BufReader::new(TcpStream::connect(addr).await.unwrap()),
    }
}

async fn start(b: Behaviour) -> SmtpReceiver {
    SmtpReceiver::start("127.0.0.2:0".parse().unwrap(), b)
        .await
        .unwrap()
}

#[tokio::test]
async fn pipelined_batch_gets_per_recipient_replies_in_order() {
    let mx = start(
        Behaviour::new()
            .rcpt("bad@example.test", "550 5.1.1 no such user")
            .rcpt("Later@Example.test", "451 4.7.1 greylisted"),
    )
    .await;
    let mut c = connect(mx.addr()).await;
    assert!(c.reply().await.starts_with("220 "));
    c.send("EHLO me.test\r\n").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.contains("250-PIPELINING") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    // The whole envelope in one write.
    c.send(
        "MAIL FROM:<from@me.test> BODY=8BITMIME\r\nRCPT TO:<good@example.test>\r\n\
         RCPT TO:<bad@example.test>\r\nRCPT TO:<later@example.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await, "250 2.1.0 ok");
    assert_eq!(c.reply().await, "250 2.1.5 ok");
    assert_eq!(c.reply().await, "550 5.1.1 no such user");
    assert_eq!(c.reply().await, "451 4.7.1 greylisted");
    assert!(c.reply().await.starts_with("354 "));
    c.send("Subject: x\r\n\r\n..starts with a dot\r\nbare\nLF kept\r\n.\r\nQUIT\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 "));
    assert!(c.reply().await.starts_with("221 "));

    let got = mx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "from@me.test");
    assert_eq!(got[0].mail_params, "BODY=8BITMIME");
    assert_eq!(got[0].rcpt_to, ["good@example.test"]);
    assert_eq!(
        got[0].data,
        b"Subject: x\r\n\r\n.starts with a dot\r\nbare\nLF kept\r\n"
    );
}

#[tokio::test]
async fn data_with_no_accepted_recipient_is_refused() {
    let mx = start(Behaviour::new().rcpt_default("550 5.1.1 nobody here")).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("HELO me.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 "));
    assert_eq!(c.reply().await, "250 2.1.0 ok");
    assert_eq!(c.reply().await, "550 5.1.1 nobody here");
    assert!(c.reply().await.starts_with("554 "));
    assert!(mx.received().is_empty());
}

#[tokio::test]
async fn message_reply_after_the_dot_decides_what_is_recorded() {
    let mx = start(Behaviour::new().message("452 4.3.1 out of space\n452 4.3.1 try later")).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    c.reply().await;
    c.send("MAIL FROM:<a@me.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    c.reply().await;
    c.reply().await;
    c.reply().await;
    c.send("hi\r\n.\r\n").await;
    assert_eq!(
        c.reply().await,
        "452-4.3.1 out of space\n452 4.3.1 try later"
    );
    assert!(mx.received().is_empty());
    assert!(mx.wait_for(1, Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn greeting_can_refuse_service() {
    let mx = start(Behaviour::new().greeting("554 5.7.1 go away")).await;
    let mut c = connect(mx.addr()).await;
    assert_eq!(c.reply().await, "554 5.7.1 go away");
    c.send("QUIT\r\n").await;
    assert!(c.reply().await.starts_with("221 "));
    assert!(c.closed().await);
}

#[tokio::test]
async fn drop_after_the_final_dot_records_nothing() {
    let mx = start(Behaviour::new().drop_at(Phase::DataEnd)).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\nMAIL FROM:<a@me.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        c.reply().await;
    }
    c.send("body\r\n.\r\n").await;
    assert!(c.closed().await, "connection closed without a reply");
    assert!(mx.received().is_empty());
    assert_eq!(mx.connections(), 1);
}

#[tokio::test]
async fn drop_at_rcpt_closes_after_earlier_replies() {
    let mx = start(Behaviour::new().drop_at(Phase::Rcpt)).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\nMAIL FROM:<a@me.test>\r\nRCPT TO:<b@x.test>\r\n")
        .await;
    assert!(c.reply().await.starts_with("250-"));
    assert_eq!(c.reply().await, "250 2.1.0 ok");
    assert_eq!(c.reply().await, "", "no RCPT reply, EOF instead");
}

#[tokio::test]
async fn stall_delays_the_reply_at_that_phase() {
    let mx = start(Behaviour::new().stall_at(Phase::Mail, Duration::from_millis(600))).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    c.reply().await;
    let started = Instant::now();
    c.send("MAIL FROM:<a@me.test>\r\n").await;
    assert_eq!(c.reply().await, "250 2.1.0 ok");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // A client with a shorter timeout than the stall sees nothing in time.
    let mx = start(Behaviour::new().stall_at(Phase::Greeting, Duration::from_secs(3))).await;
    let mut raw = TcpStream::connect(mx.addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), raw.read(&mut buf)).await;
    assert!(early.is_err(), "greeting must not arrive during the stall");
}

#[tokio::test]
async fn max_messages_per_connection_then_421() {
    let mx = start(Behaviour::new().max_messages_per_connection(1)).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    c.reply().await;
    for round in 0..2 {
        c.send("MAIL FROM:<a@me.test>\r\n").await;
        let reply = c.reply().await;
        if round == 1 {
            assert!(reply.starts_with("421 "), "{reply}");
            assert!(c.closed().await);
            break;
        }
        c.send("RCPT TO:<b@x.test>\r\nDATA\r\n").await;
        c.reply().await;
        c.reply().await;
        c.send("m\r\n.\r\n").await;
        assert!(c.reply().await.starts_with("250 "));
    }
    assert_eq!(mx.received().len(), 1);
}

#[tokio::test]
async fn size_is_advertised_and_enforced_on_mail() {
    let mx = start(Behaviour::new().size(1000).without(Extension::Pipelining)).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.contains("SIZE 1000") && !ehlo.contains("PIPELINING"),
        "{ehlo}"
    );
    c.send("MAIL FROM:<a@me.test> SIZE=5000\r\n").await;
    assert!(c.reply().await.starts_with("552 "));
}

#[tokio::test]
async fn behaviour_can_change_between_connections() {
    let mx = start(Behaviour::new().greeting("421 4.3.2 not now")).await;
    let mut c = connect(mx.addr()).await;
    assert!(c.reply().await.starts_with("421 "));
    mx.set_behaviour(Behaviour::new());
    let mut c = connect(mx.addr()).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(mx.wait_for_connections(2, T).await);
}

#[tokio::test]
async fn starttls_with_a_verifying_client() {
    let mx = start(Behaviour::new().starttls()).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    assert!(c.reply().await.contains("STARTTLS"));
    c.send("STARTTLS\r\n").await;
    assert!(c.reply().await.starts_with("220 "));

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(mx.cert().root_store())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::IpAddress(mx.addr().ip().into());
    let tcp = c.stream.into_inner();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("certificate verifies");
    let mut c = Client {
        stream: BufReader::new(tls),
    };
    c.send("EHLO me.test\r\n").await;
    let ehlo = c.reply().await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.send("MAIL FROM:<a@me.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    for _ in 0..3 {
        c.reply().await;
    }
    c.send("secret\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 "));
    let got = mx.received();
    assert!(got[0].tls);
    assert_eq!(got[0].data, b"secret\r\n");
}

#[tokio::test]
async fn mail_before_ehlo_and_unknown_commands_are_refused() {
    let mx = start(Behaviour::new()).await;
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("MAIL FROM:<a@me.test>\r\nBOGUS\r\nRCPT TO:<b@x.test>\r\n")
        .await;
    assert!(c.reply().await.starts_with("503 "));
    assert!(c.reply().await.starts_with("500 "));
    assert!(c.reply().await.starts_with("503 "));
    drop(mx);
    // Dropping the receiver closes its connections.
    assert!(c.closed().await);
}

/// One message over `c` (greeting already read); returns the reply to the final dot ("" when
/// the server hung up instead).
async fn one_message(c: &mut Client<TcpStream>, n: usize) -> String {
    c.send(&format!(
        "MAIL FROM:<a@me.test>\r\nRCPT TO:<b{n}@x.test>\r\nDATA\r\n"
    ))
    .await;
    for _ in 0..2 {
        if !c.reply().await.starts_with("250") {
            return String::new();
        }
    }
    if !c.reply().await.starts_with("354") {
        return String::new();
    }
    c.send(&format!("Subject: {n}\r\n\r\nbody\r\n.\r\n")).await;
    c.reply().await
}

#[tokio::test]
async fn tempfail_faults_answer_451_then_421_and_record_nothing() {
    let mx = start(Behaviour::new()).await;
    mx.set_faults(hedwig_testkit::Faults {
        tempfail_per_mille: 1000,
        ..Default::default()
    });
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    c.reply().await;
    assert!(one_message(&mut c, 1).await.starts_with("451 4.3.0"));
    assert!(one_message(&mut c, 2).await.starts_with("421 4.3.0"));
    assert!(c.closed().await);
    assert!(mx.received().is_empty());
    assert_eq!(mx.fault_counts().tempfails, 2);

    // Switched off: the next message is accepted and recorded, with its time.
    mx.set_faults(hedwig_testkit::Faults::default());
    let before = std::time::SystemTime::now();
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    c.reply().await;
    assert!(one_message(&mut c, 3).await.starts_with("250"));
    let got = mx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["b3@x.test"]);
    assert!(got[0].at >= before);
}

#[tokio::test]
async fn drop_in_data_closes_without_reply_and_records_nothing() {
    let mx = start(Behaviour::new()).await;
    mx.set_faults(hedwig_testkit::Faults {
        drop_in_data_per_mille: 1000,
        ..Default::default()
    });
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\nMAIL FROM:<a@me.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    c.reply().await;
    c.reply().await;
    c.reply().await;
    assert!(c.reply().await.starts_with("354"));
    c.send("Subject: cut\r\n\r\nfirst part\r\n").await;
    assert!(c.closed().await, "closed without a reply");
    assert!(mx.received().is_empty());
    assert_eq!(mx.fault_counts().drops_in_data, 1);
}

#[tokio::test]
async fn pause_refuses_connections_and_closes_open_sessions_at_their_next_command() {
    let mx = start(Behaviour::new()).await;
    let mut open = connect(mx.addr()).await;
    open.reply().await;
    open.send("EHLO me.test\r\n").await;
    open.reply().await;

    mx.pause().await;
    assert!(
        TcpStream::connect(mx.addr()).await.is_err(),
        "a paused receiver refuses connections"
    );
    open.send("MAIL FROM:<a@me.test>\r\n").await;
    assert!(open.reply().await.starts_with("421 4.3.2"));
    assert!(open.closed().await);
    assert_eq!(mx.fault_counts().closed_by_pause, 1);

    mx.resume().await.unwrap();
    let mut c = connect(mx.addr()).await;
    c.reply().await;
    c.send("EHLO me.test\r\n").await;
    c.reply().await;
    assert!(one_message(&mut c, 1).await.starts_with("250"));
    assert_eq!(mx.received().len(), 1);
}
