//! The SMTP listener: accepts connections, checks the client's network and the connection
//! limit, and runs each session over a stream with timeouts on every read and write.
//!
//! The session logic is [`crate::smtp::Session`]; this module only moves bytes, upgrades to
//! TLS on request, and hands finished messages to [`crate::deliver`]. On shutdown, a session
//! waiting for a command gets `421` and is closed; one in the middle of DATA may finish
//! (bounded by `shutdown_timeout` in [`crate::Running::wait`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::deliver::{deliver, Core};
use crate::smtp::{reply, Action, Session, SessionConfig};

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
    }
}

/// Accepts connections on `listener` until `shutdown`.
pub async fn accept_loop(
    core: Arc<Core>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
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
            core.metrics
                .connections_denied
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = %peer, "connection from a client outside allowed_networks refused");
            tracker.spawn(async move {
                let mut socket = socket;
                let text = reply::access_denied(&core.settings.fqdn);
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), socket.write_all(text.as_bytes()))
                        .await;
            });
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            core.metrics
                .connections_over_limit
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = %peer, "max_connections reached, connection refused");
            tracker.spawn(async move {
                let mut socket = socket;
                let text = reply::too_many_connections(&core.settings.fqdn);
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), socket.write_all(text.as_bytes()))
                        .await;
            });
            continue;
        };
        tracker.spawn(async move {
            core.metrics
                .connections_total
                .fetch_add(1, Ordering::Relaxed);
            core.metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            let result = serve(&core, &config, Box::new(socket), peer, &shutdown).await;
            core.metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
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

/// Runs one session over `stream` until QUIT, an error, a timeout or shutdown.
pub async fn serve(
    core: &Arc<Core>,
    config: &SessionConfig,
    mut stream: Box<dyn Stream>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let settings = &core.settings;
    let mut session = Session::new(config.clone(), peer.ip());
    let mut out = session.greeting().into_bytes();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match session.next() {
            Action::Reply(r) => out.extend_from_slice(r.as_bytes()),
            Action::NeedMore => {
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let in_data = session.in_data();
                let limit = if in_data {
                    settings.data_timeout
                } else {
                    settings.command_timeout
                };
                let read = tokio::time::timeout(limit, stream.read(&mut buf));
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
                        out.extend_from_slice(reply::timeout(&settings.fqdn).as_bytes());
                        let _ = write(&mut stream, &mut out, Duration::from_secs(5)).await;
                        if in_data {
                            tracing::info!(client = %peer, "client stalled in DATA; nothing spooled");
                        }
                        return Err(SessionEnd::Timeout);
                    }
                    Ok(Err(e)) => return Err(SessionEnd::Io(e)),
                    Ok(Ok(0)) => {
                        if in_data {
                            tracing::info!(client = %peer, "client disconnected in DATA; nothing spooled");
                        }
                        return Err(SessionEnd::Disconnected);
                    }
                    Ok(Ok(n)) => session.receive(&buf[..n]),
                }
            }
            Action::Message(message) => {
                let reply = deliver(core, message).await;
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
                write(&mut stream, &mut out, settings.command_timeout).await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
                return Ok(());
            }
        }
    }
}
