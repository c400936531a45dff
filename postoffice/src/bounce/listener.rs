//! The bounce listener's connections: accept, cap (all sessions, and per client address),
//! and drive mailman's SMTP session over the socket with a deadline on every read and write.
//!
//! Deadlines, as in mailman: a command line must arrive whole within `command_timeout` (a
//! byte does not restart the clock), a read in DATA may wait `data_timeout`, the session ends
//! after `session_timeout`. On shutdown a session waiting for a command gets `421`.
//!
//! Not here: the SMTP protocol ([`mailman::smtp`]), what a report means ([`super::report`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hedwig_queue::emit::Emitters;
use mailman::server::ClientSlots;
use mailman::smtp::{reply::reply, Action, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::report::{judge, Verdict};
use super::BounceSettings;

/// Bytes read at once.
const READ_CHUNK: usize = 16 * 1024;

/// What the sessions share.
pub struct Listener {
    pub settings: BounceSettings,
    /// The events tubes; the first server that takes the events wins.
    pub events: Emitters,
    /// The events tubes' servers, in the order tried.
    pub servers: Vec<String>,
}

/// Accepts connections on `listener` until `shutdown`; sessions run in `tracker`.
pub async fn run(
    shared: Arc<Listener>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(shared.settings.max_connections));
    let per_client = ClientSlots::new(shared.settings.max_connections_per_client);
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "bounce listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let host = &shared.settings.hostname;
        let Some(slot) = per_client.take(peer.ip()) else {
            tracing::warn!(client = %peer, "bounce listener: max_connections_per_client reached");
            refuse(
                &tracker,
                socket,
                reply(
                    421,
                    &format!("4.7.0 {host} too many connections from your address"),
                ),
            );
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "bounce listener: max_connections reached");
            refuse(
                &tracker,
                socket,
                reply(
                    421,
                    &format!("4.7.0 {host} too many connections, try later"),
                ),
            );
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _ = socket.set_nodelay(true);
            let result = serve(&shared, socket, peer, &shutdown).await;
            drop((permit, slot));
            if let Err(why) = result {
                tracing::debug!(client = %peer, %why, "bounce listener: session ended");
            }
        });
    }
}

fn refuse(tracker: &TaskTracker, mut socket: TcpStream, text: String) {
    tracker.spawn(async move {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), socket.write_all(text.as_bytes())).await;
    });
}

/// Why a session ended other than by QUIT.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client closed the connection")]
    Disconnected,
    #[error("timeout")]
    Timeout,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("shutting down")]
    Shutdown,
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), SessionEnd> {
    if out.is_empty() {
        return Ok(());
    }
    let result = tokio::time::timeout(timeout, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    out.clear();
    result
        .map_err(|_| SessionEnd::Timeout)?
        .map_err(SessionEnd::Io)
}

/// Runs one session over `stream` until QUIT, an error, a timeout or shutdown.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Listener,
    mut stream: S,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let settings = &shared.settings;
    let host = &settings.hostname;
    let mut session = Session::new(settings.session.clone(), peer.ip());
    let mut out = session.greeting().into_bytes();
    let mut buf = vec![0u8; READ_CHUNK];
    let session_end = Instant::now() + settings.session_timeout;
    let mut line_deadline = Instant::now() + settings.command_timeout;
    let mut lines_at_deadline = u64::MAX;
    loop {
        match session.next() {
            Action::Reply(r) => out.extend_from_slice(r.as_bytes()),
            Action::NeedMore => {
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let in_data = session.in_data();
                let now = Instant::now();
                let deadline = if in_data {
                    now + settings.data_timeout
                } else {
                    if !session.mid_line() || session.lines_read() != lines_at_deadline {
                        line_deadline = now + settings.command_timeout;
                        lines_at_deadline = session.lines_read();
                    }
                    line_deadline
                }
                .min(session_end);
                let read = tokio::time::timeout_at(deadline, stream.read(&mut buf));
                let result = if in_data {
                    Some(read.await)
                } else {
                    tokio::select! {
                        r = read => Some(r),
                        _ = shutdown.cancelled() => None,
                    }
                };
                let Some(result) = result else {
                    out.extend_from_slice(
                        reply(421, &format!("4.3.2 {host} shutting down")).as_bytes(),
                    );
                    let _ = write(&mut stream, &mut out, Duration::from_secs(5)).await;
                    return Err(SessionEnd::Shutdown);
                };
                match result {
                    Err(_) => {
                        out.extend_from_slice(
                            reply(421, &format!("4.4.2 {host} timeout, closing")).as_bytes(),
                        );
                        let _ = write(&mut stream, &mut out, Duration::from_secs(5)).await;
                        tracing::info!(client = %peer, in_data, "bounce listener: timeout, closing");
                        return Err(SessionEnd::Timeout);
                    }
                    Ok(Err(e)) => return Err(SessionEnd::Io(e)),
                    Ok(Ok(0)) => return Err(SessionEnd::Disconnected),
                    Ok(Ok(n)) => session.receive(&buf[..n]),
                }
            }
            Action::Message(message) => {
                let answer = take(shared, &message.rcpt_to, &message.body, peer).await;
                if let Action::Reply(r) = session.message_done(answer) {
                    out.extend_from_slice(r.as_bytes());
                }
            }
            // STARTTLS is not offered: the session never asks for it.
            Action::StartTls => return Err(SessionEnd::Disconnected),
            Action::Close => {
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
                return Ok(());
            }
        }
    }
}

/// Judges one received message, records its events, and says the reply.
async fn take(shared: &Listener, rcpt_to: &[String], body: &[u8], peer: SocketAddr) -> String {
    let settings = &shared.settings;
    let now = hedwig_queue::event::now_millis();
    match judge(&settings.key, &settings.domains, rcpt_to, body, now) {
        Verdict::Refuse(code, text) => {
            tracing::info!(client = %peer, code, "bounce listener: refused: {text}");
            reply(code, &text)
        }
        Verdict::Record { events, note } => {
            for event in &events {
                if let hedwig_queue::event::What::Recipient(r) = &event.what {
                    tracing::info!(
                        client = %peer, queue_id = %event.queue_id, recipient = %r.recipient,
                        outcome = %r.outcome, dsn = r.dsn.as_deref().unwrap_or(""),
                        "bounce listener: {}", r.reply
                    );
                }
            }
            if events.is_empty() {
                return reply(250, &format!("2.0.0 noted, nothing to record ({note})"));
            }
            for server in &shared.servers {
                if shared.events.record(server, events.clone()).await {
                    return reply(250, &format!("2.0.0 recorded: {note}"));
                }
            }
            // Kept in the emitters' backlog; the sender's retry is recorded once (same ids).
            reply(451, "4.3.0 cannot record the report now, try again later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const SECRET: &str = "a bounce listener secret, long enough";
    const QID: &str = "018F2A3B4C5D0123456789AB";

    fn shared(timeout: Duration) -> Listener {
        let config = super::super::BounceListenerConfig {
            listen: Some("127.0.170.44:25".parse().unwrap()),
            domains: vec!["bounces.example.com".into()],
            secret: Some(SECRET.into()),
            max_message_size: hedwig_core::config::ByteSize(4096),
            command_timeout: timeout,
            data_timeout: timeout,
            ..Default::default()
        };
        Listener {
            settings: config.check(false).unwrap(),
            // No beanstalkd: nothing can be recorded (a report would get 451).
            events: Emitters::default(),
            servers: Vec::new(),
        }
    }

    /// Runs a session over an in-memory stream, writes `input` and collects what the listener
    /// answers until it closes.
    async fn transcript(shared: Listener, input: &[u8]) -> Vec<String> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "127.0.170.49:4000".parse().unwrap();
        let session = tokio::spawn(async move {
            let token = CancellationToken::new();
            let _ = serve(&shared, server, peer, &token).await;
        });
        let (r, mut w) = tokio::io::split(client);
        w.write_all(input).await.unwrap();
        let mut lines = Vec::new();
        let mut r = BufReader::new(r);
        for _ in 0..100 {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            lines.push(line.trim_end().to_string());
        }
        session.await.unwrap();
        lines
    }

    #[tokio::test]
    async fn tokens_reports_and_refusals() {
        let key = hedwig_core::verp::VerpKey::new(SECRET);
        let good = key
            .return_path(QID, "bob@example.org", "bounces.example.com")
            .unwrap();
        let input = format!(
            "EHLO mx.example.org\r\nMAIL FROM:<>\r\nRCPT TO:<bounces+aaaa@bounces.example.com>\r\n\
             RCPT TO:<{}>\r\nRCPT TO:<{good}>\r\nDATA\r\nSubject: out of office\r\n\r\nBack Monday\r\n.\r\n\
             MAIL FROM:<>\r\nRCPT TO:<{good}>\r\nDATA\r\n{}\r\n.\r\nQUIT\r\n",
            good.replace("bounces.example.com", "other.example"),
            "x".repeat(5000)
        );
        let lines = transcript(shared(Duration::from_secs(5)), input.as_bytes()).await;
        let codes: Vec<&str> = lines
            .iter()
            .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
            .map(|l| &l[..3])
            .collect();
        assert_eq!(
            codes,
            [
                "220", "250", "250", "550", "550", "250", "354", "550", "250", "250", "354", "552",
                "221"
            ],
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("550 5.6.0 only delivery status")),
            "{lines:#?}"
        );
    }

    #[tokio::test]
    async fn a_report_that_cannot_be_recorded_gets_451() {
        let key = hedwig_core::verp::VerpKey::new(SECRET);
        let good = key
            .return_path(QID, "bob@example.org", "bounces.example.com")
            .unwrap();
        let dsn = include_str!("../../../message/testdata/reports/postfix-dsn.eml");
        let input =
            format!("HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<{good}>\r\nDATA\r\n{dsn}\r\n.\r\nQUIT\r\n");
        let lines = transcript(shared(Duration::from_secs(5)), input.as_bytes()).await;
        assert!(
            lines.iter().any(|l| l.starts_with("451 4.3.0")),
            "{lines:#?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dribbling_client_is_cut_off() {
        let shared = shared(Duration::from_secs(30));
        let (client, server) = tokio::io::duplex(1024);
        let peer: SocketAddr = "127.0.170.49:4000".parse().unwrap();
        let session = tokio::spawn(async move {
            let token = CancellationToken::new();
            serve(&shared, server, peer, &token).await
        });
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        let mut greeting = String::new();
        r.read_line(&mut greeting).await.unwrap();
        assert!(greeting.starts_with("220 "));
        // One byte every 10 s never makes a line within the 30 s command timeout.
        let started = tokio::time::Instant::now();
        for b in b"EHLO slow.example" {
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            if session.is_finished() {
                break;
            }
        }
        let end = session.await.unwrap();
        assert!(matches!(end, Err(SessionEnd::Timeout)), "{end:?}");
        assert!(started.elapsed() <= Duration::from_secs(40));
        let mut last = String::new();
        r.read_line(&mut last).await.unwrap();
        assert!(last.starts_with("421 4.4.2"), "{last}");
    }
}
