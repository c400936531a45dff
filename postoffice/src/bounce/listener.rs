//! The bounce listener's connections: accepted and capped (all sessions, and per client
//! address) by mailman's accept loop ([`mailman::accept`]), each running mailman's SMTP session
//! over the socket through mailman's I/O loop ([`mailman::drive`]): the same two loops
//! mailman's own listener uses, with this listener's [`Gate`] and [`Handler`].
//!
//! Deadlines, as in mailman: a command line must arrive whole within `command_timeout` (a
//! byte does not restart the clock), a read in DATA may wait `data_timeout`, a report must
//! arrive at `min_data_rate` octets per second after a grace of `data_timeout`, the session
//! ends after `session_timeout`; a client cut by one gets `421 4.4.2`. On shutdown a session
//! waiting for a command gets `421`. STARTTLS when `tls` is set (the session starts over
//! after the handshake, RFC 3207 §4.2).
//!
//! Not here: the SMTP protocol ([`mailman::smtp`]), what a report means ([`super::report`]).

use std::net::SocketAddr;
use std::sync::Arc;

use hedwig_queue::emit::Emitters;
use mailman::accept::{accept_loop, Caps, Gate, Refused};
use mailman::drive::{drive, Bounds, Handler};
pub use mailman::drive::{SessionEnd, Stream};
use mailman::smtp::{reply::reply, Message, RecipientCheck, Reply, Session};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::metrics::BounceMetrics;
use super::report::{judge, Verdict};
use super::BounceSettings;

/// What the sessions share.
pub struct Listener {
    pub settings: BounceSettings,
    /// The events tubes; the first server that takes the events wins.
    pub events: Emitters,
    /// The events tubes' servers, in the order tried.
    pub servers: Vec<String>,
    pub metrics: BounceMetrics,
    bounds: Bounds,
}

impl Listener {
    /// The listener for `settings`; `tls` is the STARTTLS configuration (from
    /// `settings.tls`, loaded by the caller, which also watches it for reloads).
    pub fn new(
        mut settings: BounceSettings,
        events: Emitters,
        servers: Vec<String>,
        metrics: BounceMetrics,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Listener {
        settings.session.starttls = tls.is_some();
        // Count the recipients the token check refuses.
        if let Some(check) = settings.session.recipient_check.take() {
            let counter = metrics.recipients_refused.clone();
            settings.session.recipient_check = Some(RecipientCheck(Arc::new(move |address| {
                let verdict = (check.0)(address);
                if verdict.is_err() {
                    counter.inc();
                }
                verdict
            })));
        }
        let bounds = Bounds {
            hostname: settings.hostname.clone(),
            command_timeout: settings.command_timeout,
            data_timeout: settings.data_timeout,
            min_data_rate: settings.min_data_rate,
            session_timeout: settings.session_timeout,
            tls,
        };
        Listener {
            settings,
            events,
            servers,
            metrics,
            bounds,
        }
    }
}

/// The bounce listener's side of mailman's accept loop ([`mailman::accept`]): every address
/// is welcome (the MX of a bounce domain takes mail from anyone), refusals are counted.
impl Gate for Listener {
    fn name(&self) -> &'static str {
        "bounce listener"
    }

    fn refused(&self, peer: SocketAddr, why: Refused) -> Reply {
        let host = &self.settings.hostname;
        match why {
            Refused::PerClient => {
                tracing::warn!(client = %peer, "bounce listener: max_connections_per_client reached");
                self.metrics.session("refused_per_client");
                mailman::smtp::reply::too_many_from_client(host)
            }
            // No address is unwelcome here (no `welcome`): Unwelcome cannot happen.
            Refused::Full | Refused::Unwelcome => {
                tracing::warn!(client = %peer, "bounce listener: max_connections reached");
                self.metrics.session("refused_max_connections");
                mailman::smtp::reply::too_many_connections(host)
            }
        }
    }

    async fn serve(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        if let Err(why) = serve(&self, Box::new(socket), peer, &shutdown).await {
            tracing::debug!(client = %peer, %why, "bounce listener: session ended");
        }
    }
}

/// Accepts connections on `listener` until `shutdown`; sessions run in `tracker`.
pub async fn run(
    shared: Arc<Listener>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let caps = Caps::new(
        shared.settings.max_connections,
        shared.settings.max_connections_per_client,
    );
    accept_loop(shared, listener, caps, tracker, shutdown).await
}

/// The bounce listener's side of mailman's I/O loop: a finished message is judged and
/// recorded.
struct Taker<'a>(&'a Listener);

impl Handler for Taker<'_> {
    async fn message(&self, message: Message) -> Reply {
        take(self.0, &message).await
    }

    fn tls_started(&self, peer: SocketAddr) {
        self.0.metrics.starttls.inc();
        tracing::debug!(client = %peer, "bounce listener: STARTTLS done");
    }
}

/// Runs one session over `stream` until QUIT, an error, a deadline or shutdown, and counts
/// its outcome.
pub async fn serve(
    shared: &Listener,
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let session = Session::new(shared.settings.session.clone(), peer.ip());
    let result = drive(
        &Taker(shared),
        &shared.bounds,
        session,
        stream,
        peer,
        shutdown,
    )
    .instrument(tracing::info_span!("bounce_listener"))
    .await;
    shared.metrics.session(match &result {
        Ok(()) => "quit",
        Err(end) => end.label(),
    });
    result
}

/// Judges one received message, records its events, and says the reply.
async fn take(shared: &Listener, message: &Message) -> Reply {
    let settings = &shared.settings;
    let peer = message.client;
    let now = hedwig_queue::event::now_millis();
    match judge(
        &settings.key,
        &settings.domains,
        &message.rcpt_to,
        &message.body,
        now,
    ) {
        Verdict::Refuse(code, text, why) => {
            shared.metrics.message(why.label());
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
                shared.metrics.message("nothing_to_record");
                return reply(250, &format!("2.0.0 noted, nothing to record ({note})"));
            }
            let complaint = events.iter().any(|e| {
                matches!(&e.what, hedwig_queue::event::What::Recipient(r)
                    if r.outcome == hedwig_queue::event::Outcome::Complained)
            });
            for server in &shared.servers {
                if shared.events.record(server, events.clone()).await {
                    shared.metrics.message(if complaint {
                        "complaint_recorded"
                    } else {
                        "bounce_recorded"
                    });
                    return reply(250, &format!("2.0.0 recorded: {note}"));
                }
            }
            // Kept in the emitters' backlog; the sender's retry is recorded once (same ids).
            shared.metrics.message("deferred");
            reply(451, "4.3.0 cannot record the report now, try again later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
        // No beanstalkd: nothing can be recorded (a report would get 451).
        Listener::new(
            config.check(false).unwrap(),
            Emitters::default(),
            Vec::new(),
            BounceMetrics::default(),
            None,
        )
    }

    /// Runs a session over an in-memory stream, writes `input` and collects what the listener
    /// answers until it closes.
    async fn transcript(shared: Listener, input: &[u8]) -> Vec<String> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "127.0.170.49:4000".parse().unwrap();
        let session = tokio::spawn(async move {
            let token = CancellationToken::new();
            let _ = serve(&shared, Box::new(server), peer, &token).await;
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
            serve(&shared, Box::new(server), peer, &token).await
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
