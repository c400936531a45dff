//! The SMTP listener: accepts connections, checks the client's network and the connection
//! limits (all clients, and per client address), and runs each session over a stream with
//! deadlines on every read and write.
//!
//! Deadlines (issue 11 F5: a client must not hold a slot by dribbling):
//! - a command line must arrive whole within `command_timeout` of the previous one: each byte
//!   does not restart the clock;
//! - in DATA, a read may wait `data_timeout`, and the message as a whole must arrive at
//!   `min_data_rate` octets per second on average after a grace of `data_timeout`;
//! - the whole session ends after `session_timeout`.
//!
//! A client address over `max_connections_per_client` gets `421 4.7.0` before it can take one
//! of the `max_connections` slots, so it cannot lock its neighbours out.
//!
//! The session logic is [`crate::smtp::Session`]; this module only moves bytes, upgrades to
//! TLS on request, hands finished messages to [`crate::handoff`] and SMTP AUTH credentials to
//! [`crate::auth`]. On shutdown, a session
//! waiting for a command gets `421` and is closed; one in the middle of DATA may finish
//! (bounded by `shutdown_timeout` in [`crate::Running::wait`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handoff::{hand_off, Core};
use crate::smtp::{reply, Action, AppPolicy, RateCheck, Session, SessionConfig, Step};
use tracing::Instrument;

/// A byte stream a session can run over (TCP, TLS over TCP, or an in-memory pipe in tests).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Bytes read at once from a client.
const READ_CHUNK: usize = 16 * 1024;

/// Bad commands after which a session is closed.
const MAX_ERRORS: usize = 20;

/// The session settings derived from the config.
pub fn session_config(core: &Core) -> SessionConfig {
    SessionConfig {
        hostname: core.settings.fqdn.clone(),
        max_message_size: core.settings.max_message_size,
        max_recipients: core.settings.max_recipients,
        starttls: core.settings.tls.is_some(),
        max_errors: MAX_ERRORS,
        bare_newline: core.settings.bare_newline,
        recipient_check: None,
    }
}

/// Open sessions per client address, shared by every listener.
pub struct ClientSlots {
    limit: usize,
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One client's slot; given back on drop.
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    /// At most `limit` sessions per address.
    pub fn new(limit: usize) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            limit,
            open: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or `None` when it has `limit` open already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        // An IPv4 client on a dual-stack socket counts as its IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mut open = self.open.lock().ok()?;
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.open.lock() {
            if let Some(n) = open.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

/// Sends a refused connection its `text` (a `421` or `554` greeting), given 5 s at most, in a
/// tracked task, and closes it.
fn refuse(tracker: &TaskTracker, mut socket: TcpStream, text: String) {
    tracker.spawn(async move {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), socket.write_all(text.as_bytes())).await;
    });
}

/// Accepts connections on `listener` until `shutdown`.
pub async fn accept_loop(
    core: Arc<Core>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    per_client: Arc<ClientSlots>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let config = Arc::new(session_config(&core));
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let core = core.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        if !core.settings.allowed(peer.ip()) {
            core.metrics.connections_denied.inc();
            tracing::warn!(client = %peer, "connection from a client outside allowed_networks refused");
            refuse(&tracker, socket, reply::access_denied(&core.settings.fqdn));
            continue;
        }
        // The per-address cap first, so that one client over it never holds a global slot.
        let Some(client_slot) = per_client.take(peer.ip()) else {
            core.metrics.connections_over_client_limit.inc();
            tracing::warn!(client = %peer, limit = per_client.limit, "max_connections_per_client reached, connection refused");
            refuse(
                &tracker,
                socket,
                reply::too_many_from_client(&core.settings.fqdn),
            );
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            core.metrics.connections_over_limit.inc();
            tracing::warn!(client = %peer, "max_connections reached, connection refused");
            refuse(
                &tracker,
                socket,
                reply::too_many_connections(&core.settings.fqdn),
            );
            continue;
        };
        tracker.spawn(async move {
            core.metrics.connections_total.inc();
            core.metrics.connections_open.inc();
            let result = serve(&core, &config, Box::new(socket), peer, &shutdown).await;
            core.metrics.connections_open.dec();
            drop(permit);
            drop(client_slot);
            if let Err(why) = result {
                tracing::debug!(client = %peer, %why, "session ended");
            }
        });
    }
}

/// Why a session ended other than by QUIT.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client closed the connection")]
    Disconnected,
    #[error("timeout")]
    Timeout,
    #[error("session_timeout reached")]
    SessionDeadline,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("shutting down")]
    Shutdown,
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

/// Why a read in [`serve`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing (or not a whole command line) in time.
    Idle,
    /// DATA slower than `min_data_rate`.
    Slow,
    /// `session_timeout`.
    Session,
}

/// Runs one session over `stream` until QUIT, an error, a timeout or shutdown.
pub async fn serve(
    core: &Arc<Core>,
    config: &SessionConfig,
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let mut session = Session::new(config.clone(), peer.ip());
    if let Some(auth) = &core.settings.auth {
        session.set_auth(auth.policy(peer.ip()));
    }
    let span = match &core.docker {
        Some(resolver) => identify(resolver, &mut session, peer).await,
        None => tracing::Span::none(),
    };
    run_session(core, session, stream, peer, shutdown)
        .instrument(span)
        .await
}

/// Names the session's app when the client is a container: its identity and label policy
/// from the map (waiting at most `docker.lookup_timeout`), and a span that puts the app's
/// name on every log line of the session.
async fn identify(
    resolver: &Arc<crate::docker::Resolver>,
    session: &mut Session,
    peer: SocketAddr,
) -> tracing::Span {
    let Some(identity) = resolver.lookup(peer.ip()).await else {
        return tracing::Span::none();
    };
    let app = &identity.app;
    let span = tracing::info_span!("app", app = %app.name);
    tracing::info!(
        parent: &span,
        client = %peer,
        app = %app.name,
        image = app.image.as_deref().unwrap_or(""),
        compose_project = app.compose_project.as_deref().unwrap_or(""),
        compose_service = app.compose_service.as_deref().unwrap_or(""),
        lane = app.lane.as_deref().unwrap_or(""),
        "client is a container"
    );
    let rate = identity.policy.rate.map(|_| {
        let resolver = resolver.clone();
        let identity = identity.clone();
        RateCheck(Arc::new(move || {
            resolver.take_message(&identity, Instant::now())
        }))
    });
    session.set_app_policy(Some(AppPolicy {
        who: format!("container {}", app.name),
        sender_domains: identity.policy.sender_domains.clone(),
        rate,
        bad_label: identity.policy.bad_label.clone(),
    }));
    session.set_app(Some(app.clone()));
    span
}

async fn run_session(
    core: &Arc<Core>,
    mut session: Session,
    mut stream: Box<dyn Stream>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let settings = &core.settings;
    let mut out = session.greeting().into_bytes();
    let mut buf = vec![0u8; READ_CHUNK];
    let session_end = Instant::now() + settings.session_timeout;
    // The deadline of the command line being read, and the line count it was set at.
    let mut line_deadline = Instant::now() + settings.command_timeout;
    let mut lines_at_deadline = u64::MAX;
    // In DATA: when it began and the octets read since.
    let mut data: Option<(Instant, u64)> = None;
    loop {
        let action = match session.step() {
            Step::Action(action) => action,
            Step::Authenticate(credentials) => {
                // The check (argon2, then the delay a failure earns) runs off the session; its
                // own time is bounded by the failure delay's cap, the session's by
                // session_timeout at the next read.
                let outcome = match &settings.auth {
                    Some(auth) => auth.check(peer.ip(), credentials).await,
                    None => crate::smtp::AuthOutcome::Unavailable,
                };
                core.metrics.auth_checked(&outcome);
                session.auth_done(outcome)
            }
        };
        match action {
            Action::Reply(r) => {
                if let Some(refusal) = session.take_policy_refusal() {
                    core.metrics.app_policy_refused.inc();
                    tracing::info!(client = %peer, reply = %refusal, "refused for the app's label policy");
                }
                out.extend_from_slice(r.as_bytes())
            }
            Action::NeedMore => {
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let in_data = session.in_data();
                let now = Instant::now();
                let (deadline, cut) = if in_data {
                    let (since, octets) = *data.get_or_insert((now, 0));
                    let idle = now + settings.data_timeout;
                    let slow = match settings.min_data_rate {
                        0 => None,
                        rate => Some(
                            since
                                + settings.data_timeout
                                + Duration::from_secs_f64(octets as f64 / rate as f64),
                        ),
                    };
                    match slow {
                        Some(slow) if slow < idle => (slow, Cut::Slow),
                        _ => (idle, Cut::Idle),
                    }
                } else {
                    data = None;
                    if !session.mid_line() || session.lines_read() != lines_at_deadline {
                        line_deadline = now + settings.command_timeout;
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
                    out.extend_from_slice(reply::shutting_down(&settings.fqdn).as_bytes());
                    let _ = write(&mut stream, &mut out, Duration::from_secs(5)).await;
                    return Err(SessionEnd::Shutdown);
                };
                match result {
                    Err(_) => {
                        core.metrics.sessions_timed_out.inc();
                        let last = match cut {
                            Cut::Session => reply::session_too_long(&settings.fqdn),
                            Cut::Idle | Cut::Slow => reply::timeout(&settings.fqdn),
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
                            if in_data { ", nothing spooled" } else { "" });
                        return Err(match cut {
                            Cut::Session => SessionEnd::SessionDeadline,
                            _ => SessionEnd::Timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(SessionEnd::Io(e)),
                    Ok(Ok(0)) => {
                        if in_data {
                            tracing::info!(client = %peer, "client disconnected in DATA; nothing spooled");
                        }
                        return Err(SessionEnd::Disconnected);
                    }
                    Ok(Ok(n)) => {
                        if let Some((_, octets)) = data.as_mut() {
                            *octets += n as u64;
                        }
                        session.receive(&buf[..n]);
                    }
                }
            }
            Action::Message(message) => {
                data = None;
                let reply = hand_off(core, message).await;
                if let Action::Reply(r) = session.message_done(reply) {
                    out.extend_from_slice(r.as_bytes());
                }
            }
            Action::StartTls => {
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let Some(tls) = settings.tls.clone() else {
                    return Err(SessionEnd::Disconnected);
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let upgraded =
                    tokio::time::timeout(settings.command_timeout, acceptor.accept(stream))
                        .await
                        .map_err(|_| SessionEnd::Timeout)?
                        .map_err(SessionEnd::Tls)?;
                stream = Box::new(upgraded);
                session.tls_started();
            }
            Action::Close => {
                if session.bare_lf_refused() {
                    tracing::info!(client = %peer, "bare LF received, refused and closed (bare_newline: reject)");
                }
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
                return Ok(());
            }
        }
    }
}
