//! The I/O loop of one SMTP session, shared by mailman's listener ([`crate::server`]) and the
//! post office's bounce listener (issue 14: "reuse mailman's SMTP session core rather than
//! writing a second one"). It moves bytes between a stream and a [`Session`], applies the
//! deadlines, upgrades to TLS on STARTTLS, and hands finished messages and SMTP AUTH
//! credentials to a [`Handler`], which is what differs between the two listeners.
//!
//! Deadlines (issue 11 F5: a client must not hold a slot by dribbling):
//! - a command line must arrive whole within `command_timeout` of the previous one: each byte
//!   does not restart the clock;
//! - in DATA, a read may wait `data_timeout`, and the message as a whole must arrive at
//!   `min_data_rate` octets per second on average after a grace of `data_timeout`
//!   (Postfix's `smtpd_min_data_rate`); 0 turns the rate check off;
//! - the whole session ends after `session_timeout`.
//!
//! A client cut by a deadline gets `421 4.4.2` and is closed. On shutdown, a session waiting
//! for a command gets `421 4.3.2` and is closed; one in the middle of DATA may finish (the
//! caller bounds that wait).
//!
//! Not here: accepting connections and their caps (each listener), the SMTP protocol
//! ([`crate::smtp`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::smtp::{reply, Action, AuthOutcome, Credentials, Message, Reply, Session, Step};

/// A byte stream a session can run over (TCP, TLS over TCP, or an in-memory pipe in tests).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Bytes read at once from a client.
const READ_CHUNK: usize = 16 * 1024;

/// The bounds of a session and its TLS.
#[derive(Clone)]
pub struct Bounds {
    /// The host name in `421` replies.
    pub hostname: String,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Octets per second a message must average in DATA after `data_timeout`; 0: no check.
    pub min_data_rate: u64,
    pub session_timeout: Duration,
    /// The STARTTLS configuration, when the session offers STARTTLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a listener supplies to the loop.
pub trait Handler: Sync {
    /// The reply to a finished message (after it was handed on, recorded or refused).
    fn message(&self, message: Message) -> impl Future<Output = Reply> + Send;

    /// The verdict on SMTP AUTH credentials (only asked when the session offers AUTH).
    fn authenticate(
        &self,
        client: IpAddr,
        credentials: Credentials,
    ) -> impl Future<Output = AuthOutcome> + Send {
        let _ = (client, credentials);
        async { AuthOutcome::Unavailable }
    }

    /// Called before each reply is queued, e.g. to log or count a policy refusal.
    fn replying(&self, session: &mut Session, peer: SocketAddr) {
        let _ = (session, peer);
    }

    /// Called after a STARTTLS handshake succeeded.
    fn tls_started(&self, peer: SocketAddr) {
        let _ = peer;
    }
}

/// Why a session ended other than by QUIT (or the session closing it, e.g. after too many
/// errors).
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client closed the connection")]
    Disconnected,
    /// No whole command line within `command_timeout`, or no byte within `data_timeout` in
    /// DATA.
    #[error("timeout")]
    Timeout,
    /// A message arriving slower than `min_data_rate`.
    #[error("message arriving slower than min_data_rate")]
    TooSlow,
    #[error("session_timeout reached")]
    SessionDeadline,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("shutting down")]
    Shutdown,
}

impl SessionEnd {
    /// A short, fixed name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            SessionEnd::Disconnected => "disconnected",
            SessionEnd::Timeout => "timeout",
            SessionEnd::TooSlow => "too_slow",
            SessionEnd::SessionDeadline => "session_timeout",
            SessionEnd::Io(_) => "io_error",
            SessionEnd::Tls(_) => "tls_failed",
            SessionEnd::Shutdown => "shutdown",
        }
    }

    /// Whether a deadline cut the session.
    pub fn is_cut(&self) -> bool {
        matches!(
            self,
            SessionEnd::Timeout | SessionEnd::TooSlow | SessionEnd::SessionDeadline
        )
    }
}

async fn write(
    stream: &mut Box<dyn Stream>,
    out: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), SessionEnd> {
    if out.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(timeout, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => {
            out.clear();
            r.map_err(SessionEnd::Io)
        }
        Err(_) => Err(SessionEnd::Timeout),
    }
}

/// Why a read gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing (or not a whole command line) in time.
    Idle,
    /// DATA slower than `min_data_rate`.
    Slow,
    /// `session_timeout`.
    Session,
}

/// The DATA rate check: when DATA began and the octets read since.
#[derive(Debug, Clone, Copy)]
pub struct DataClock {
    since: Instant,
    octets: u64,
}

impl DataClock {
    /// DATA begins at `now`.
    pub fn start(now: Instant) -> DataClock {
        DataClock {
            since: now,
            octets: 0,
        }
    }

    /// `n` more octets arrived.
    pub fn received(&mut self, n: usize) {
        self.octets += n as u64;
    }

    /// When the next octet must have arrived for the message to keep `min_data_rate` after a
    /// grace of `grace`; `None` when `min_data_rate` is 0.
    pub fn deadline(&self, grace: Duration, min_data_rate: u64) -> Option<Instant> {
        match min_data_rate {
            0 => None,
            rate => {
                Some(self.since + grace + Duration::from_secs_f64(self.octets as f64 / rate as f64))
            }
        }
    }
}

/// Runs `session` over `stream` until QUIT, an error, a deadline or shutdown.
pub async fn drive<H: Handler>(
    handler: &H,
    bounds: &Bounds,
    mut session: Session,
    mut stream: Box<dyn Stream>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let host = &bounds.hostname;
    let mut out = session.greeting().into_bytes();
    let mut buf = vec![0u8; READ_CHUNK];
    let session_end = Instant::now() + bounds.session_timeout;
    // The deadline of the command line being read, and the line count it was set at.
    let mut line_deadline = Instant::now() + bounds.command_timeout;
    let mut lines_at_deadline = u64::MAX;
    let mut data: Option<DataClock> = None;
    loop {
        let action = match session.step() {
            Step::Action(action) => action,
            Step::Authenticate(credentials) => {
                // The check runs off the session; its time is bounded by the handler, the
                // session's by session_timeout at the next read.
                let outcome = handler.authenticate(peer.ip(), credentials).await;
                session.auth_done(outcome)
            }
        };
        match action {
            Action::Reply(r) => {
                handler.replying(&mut session, peer);
                out.extend_from_slice(r.as_bytes())
            }
            Action::NeedMore => {
                write(&mut stream, &mut out, bounds.command_timeout).await?;
                let in_data = session.in_data();
                let now = Instant::now();
                let (deadline, cut) = if in_data {
                    let clock = *data.get_or_insert(DataClock::start(now));
                    let idle = now + bounds.data_timeout;
                    match clock.deadline(bounds.data_timeout, bounds.min_data_rate) {
                        Some(slow) if slow < idle => (slow, Cut::Slow),
                        _ => (idle, Cut::Idle),
                    }
                } else {
                    data = None;
                    if !session.mid_line() || session.lines_read() != lines_at_deadline {
                        line_deadline = now + bounds.command_timeout;
                        lines_at_deadline = session.lines_read();
                    }
                    (line_deadline, Cut::Idle)
                };
                let (deadline, cut) = if session_end < deadline {
                    (session_end, Cut::Session)
                } else {
                    (deadline, cut)
                };
                let read = tokio::time::timeout_at(deadline, stream.read(&mut buf));
                let result = if in_data {
                    // A message being sent may finish; the caller bounds the wait.
                    Some(read.await)
                } else {
                    tokio::select! {
                        r = read => Some(r),
                        _ = shutdown.cancelled() => None,
                    }
                };
                let Some(result) = result else {
                    out.extend_from_slice(reply::shutting_down(host).as_bytes());
                    let _ = write(&mut stream, &mut out, Duration::from_secs(5)).await;
                    return Err(SessionEnd::Shutdown);
                };
                match result {
                    Err(_) => {
                        let last = match cut {
                            Cut::Session => reply::session_too_long(host),
                            Cut::Idle | Cut::Slow => reply::timeout(host),
                        };
                        out.extend_from_slice(last.as_bytes());
                        let _ = write(&mut stream, &mut out, Duration::from_secs(5)).await;
                        let why = match (cut, in_data) {
                            (Cut::Session, _) => "session_timeout reached",
                            (Cut::Slow, _) => "message arriving slower than min_data_rate",
                            (Cut::Idle, true) => "client stalled in DATA",
                            (Cut::Idle, false) => "no whole command line within command_timeout",
                        };
                        tracing::info!(client = %peer, in_data, "{why}; closing the session{}",
                            if in_data { ", the message is dropped" } else { "" });
                        return Err(match cut {
                            Cut::Session => SessionEnd::SessionDeadline,
                            Cut::Slow => SessionEnd::TooSlow,
                            Cut::Idle => SessionEnd::Timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(SessionEnd::Io(e)),
                    Ok(Ok(0)) => {
                        if in_data {
                            tracing::info!(client = %peer, "client disconnected in DATA; the message is dropped");
                        }
                        return Err(SessionEnd::Disconnected);
                    }
                    Ok(Ok(n)) => {
                        if let Some(clock) = data.as_mut() {
                            clock.received(n);
                        }
                        session.receive(&buf[..n]);
                    }
                }
            }
            Action::Message(message) => {
                data = None;
                let reply = handler.message(message).await;
                if let Action::Reply(r) = session.message_done(reply) {
                    out.extend_from_slice(r.as_bytes());
                }
            }
            Action::StartTls => {
                write(&mut stream, &mut out, bounds.command_timeout).await?;
                // The session offers STARTTLS only when it was told TLS is configured.
                let Some(tls) = bounds.tls.clone() else {
                    return Err(SessionEnd::Disconnected);
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let upgraded =
                    tokio::time::timeout(bounds.command_timeout, acceptor.accept(stream))
                        .await
                        .map_err(|_| SessionEnd::Timeout)?
                        .map_err(SessionEnd::Tls)?;
                stream = Box::new(upgraded);
                session.tls_started();
                handler.tls_started(peer);
            }
            Action::Close => {
                if session.bare_lf_refused() {
                    tracing::info!(client = %peer, "bare LF received, refused and closed (bare_newline: reject)");
                }
                write(&mut stream, &mut out, bounds.command_timeout).await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_clock_allows_the_grace_then_the_rate() {
        let now = Instant::now();
        let mut clock = DataClock::start(now);
        let grace = Duration::from_secs(10);
        assert_eq!(clock.deadline(grace, 0), None);
        assert_eq!(clock.deadline(grace, 100), Some(now + grace));
        clock.received(500);
        assert_eq!(
            clock.deadline(grace, 100),
            Some(now + grace + Duration::from_secs(5))
        );
    }
}
