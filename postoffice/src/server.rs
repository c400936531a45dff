//! The connection layer (issue 11, F3): our own accept loop around hyper's HTTP/1.1
//! connections, so that nobody without a key can hold the post office's descriptors.
//!
//! - A connection must send its request headers within `header_timeout` of opening (or, on a
//!   kept-alive connection, of the next request's first byte), and may wait `idle_timeout`
//!   between requests; then it is closed.
//! - At most `max_connections` connections, `max_connections_per_ip` from one address. At a
//!   cap the oldest connection with no request in flight is closed for the new one (one that
//!   never authenticated first), then the oldest one reading an unsigned body; a connection
//!   with a signed request in flight is never closed for another. With none to close, the new
//!   connection is closed at once. A connection idle for less than a second is not closed
//!   (it may be about to send its request).
//! - The descriptor limit is raised to its hard limit at start, and `max_connections` lowered
//!   to what it allows.
//!
//! Each request carries its connection's [`Conn`] in its extensions, so the intake can mark it
//! authenticated (a signed post) or reading an unsigned body.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ConnectionMetrics;
use tower::ServiceExt;

/// Descriptors kept for beanstalkd connections, log files and the listener.
const RESERVED_FDS: u64 = 256;

/// An idle connection younger than this is not closed for a new one.
const SHED_GRACE: Duration = Duration::from_secs(1);

/// The connection limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// One open connection, as the registry and its requests see it.
pub struct Conn {
    id: u64,
    ip: IpAddr,
    opened: Instant,
    times: Mutex<Times>,
    in_flight: AtomicUsize,
    /// A signed request authenticated on this connection.
    authenticated: AtomicBool,
    /// Unsigned request bodies being read now.
    unsigned_in_flight: AtomicUsize,
    close: CancellationToken,
}

struct Times {
    /// When the last request's answer was ready (None: no request yet).
    last_done: Option<Instant>,
    /// First byte received while no request was in flight: a request's headers are coming.
    first_byte: Option<Instant>,
}

impl Conn {
    /// Marks the connection as having authenticated a signed request.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// Marks an unsigned body being read until the guard is dropped.
    pub fn reading_unsigned(self: &Arc<Self>) -> UnsignedGuard {
        self.unsigned_in_flight.fetch_add(1, Ordering::Relaxed);
        UnsignedGuard(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When this connection is to be closed if nothing changes (None: a request is in flight).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let times = self.lock();
        Some(match (times.first_byte, times.last_done) {
            (Some(first), Some(_)) => first + limits.header_timeout,
            (_, None) => self.opened + limits.header_timeout,
            (None, Some(done)) => done + limits.idle_timeout,
        })
    }

    /// Shedding order: lower goes first; None: never shed. A connection idle for less than
    /// [`SHED_GRACE`] is not shed (it may be about to send its request).
    fn shed_class(&self, now: Instant) -> Option<(u8, Instant)> {
        let last = self.lock().last_done.unwrap_or(self.opened);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            if now.duration_since(last) < SHED_GRACE {
                return None;
            }
            let class = u8::from(self.authenticated.load(Ordering::Relaxed));
            Some((class, last))
        } else if self.unsigned_in_flight.load(Ordering::Relaxed) > 0
            || !self.authenticated.load(Ordering::Relaxed)
        {
            // Reading an unsigned body, or a request on a connection that never authenticated
            // (an unsigned `/check` waiting for its slot, `/health`): sheddable. Only a
            // connection that proved a signature holds its place.
            Some((2, last))
        } else {
            None
        }
    }
}

/// See [`Conn::reading_unsigned`].
pub struct UnsignedGuard(Arc<Conn>);

impl Drop for UnsignedGuard {
    fn drop(&mut self) {
        self.0.unsigned_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request in flight from the call until its answer is ready.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.lock().first_byte = None;
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut times = self.0.lock();
        times.last_done = Some(Instant::now());
        times.first_byte = None;
        drop(times);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    metrics: ConnectionMetrics,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Registry {
    /// A registry counting into `metrics`.
    pub fn new(metrics: ConnectionMetrics) -> Registry {
        Registry {
            metrics,
            ..Registry::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a connection from `ip`, closing another one at a cap; None: refused.
    fn admit(&self, ip: IpAddr, limits: &Limits) -> Option<(Arc<Conn>, Option<&'static str>)> {
        let mut inner = self.lock();
        let mut shed = None;
        let now = Instant::now();
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        let scope = if from_ip >= limits.max_connections_per_ip {
            Some(Some(ip))
        } else if inner.conns.len() >= limits.max_connections {
            Some(None)
        } else {
            None
        };
        if let Some(scope) = scope {
            let victim = inner
                .conns
                .values()
                .filter(|c| scope.is_none_or(|ip| c.ip == ip))
                .filter_map(|c| c.shed_class(now).map(|k| (k, c.id)))
                .min()
                .map(|(_, id)| id);
            let Some(victim) = victim else {
                self.metrics.closed("refused");
                return None;
            };
            if let Some(conn) = remove(&mut inner, victim) {
                conn.close.cancel();
                self.metrics.closed("shed");
            }
            shed = Some(if scope.is_some() {
                "per-client connection cap"
            } else {
                "connection cap"
            });
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            ip,
            opened: Instant::now(),
            times: Mutex::new(Times {
                last_done: None,
                first_byte: None,
            }),
            in_flight: AtomicUsize::new(0),
            authenticated: AtomicBool::new(false),
            unsigned_in_flight: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        inner.conns.insert(conn.id, conn.clone());
        *inner.per_ip.entry(ip).or_default() += 1;
        self.metrics.open.set(inner.conns.len() as i64);
        Some((conn, shed))
    }

    fn release(&self, conn: &Conn) {
        let mut inner = self.lock();
        remove(&mut inner, conn.id);
        self.metrics.open.set(inner.conns.len() as i64);
    }
}

fn remove(inner: &mut Inner, id: u64) -> Option<Arc<Conn>> {
    let conn = inner.conns.remove(&id)?;
    if let Some(n) = inner.per_ip.get_mut(&conn.ip) {
        *n -= 1;
        if *n == 0 {
            inner.per_ip.remove(&conn.ip);
        }
    }
    Some(conn)
}

/// Raises the soft descriptor limit to the hard limit; returns the limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
    Ok(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> io::Result<u64> {
    Err(io::Error::other("not supported on this platform"))
}

/// The connection cap the descriptor limit allows.
pub fn effective_max_connections(configured: usize) -> usize {
    match raise_fd_limit() {
        Ok(fds) => {
            let room =
                usize::try_from(fds.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
            if configured > room {
                tracing::warn!(
                    descriptor_limit = fds,
                    max_connections = configured,
                    lowered_to = room,
                    "the descriptor limit cannot hold max_connections; lowered"
                );
            } else {
                tracing::info!(
                    descriptor_limit = fds,
                    max_connections = configured,
                    "descriptor limit"
                );
            }
            configured.min(room)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the descriptor limit");
            configured
        }
    }
}

/// A stream that notes when a request's first byte arrives.
struct Tracked<S> {
    stream: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.in_flight.load(Ordering::Relaxed) == 0 {
            let mut times = self.conn.lock();
            if times.first_byte.is_none() {
                times.first_byte = Some(Instant::now());
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets the requests in
/// flight finish (idle connections close at once) and returns when every connection is closed.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, open = registry.len(), "cannot accept a connection");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((conn, shed)) = registry.admit(peer.ip(), &limits) else {
            tracing::debug!(client = %peer.ip(), "connection refused: at the connection cap with none to close");
            drop(stream);
            continue;
        };
        if let Some(why) = shed {
            tracing::debug!(client = %peer.ip(), cap = why, "closed an older connection for a new one");
        }
        let _ = stream.set_nodelay(true);
        let (router, registry, shutdown) = (router.clone(), registry.clone(), shutdown.clone());
        match tls.clone() {
            None => tracker.spawn(serve_connection(
                stream, peer, conn, router, limits, registry, shutdown,
            )),
            Some(acceptor) => tracker.spawn(async move {
                // The handshake counts against the header timeout.
                let handshake = tokio::select! {
                    done = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => done,
                    _ = conn.close.cancelled() => {
                        registry.release(&conn);
                        return;
                    }
                };
                match handshake {
                    Ok(Ok(stream)) => {
                        serve_connection(stream, peer, conn, router, limits, registry, shutdown)
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed");
                        registry.metrics.closed("tls");
                        registry.release(&conn);
                    }
                    Err(_) => {
                        tracing::debug!(client = %peer.ip(), "TLS handshake timed out");
                        registry.metrics.closed("tls");
                        registry.release(&conn);
                    }
                }
            }),
        };
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    conn: Arc<Conn>,
    router: Router,
    limits: Limits,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Tracked {
        stream,
        conn: conn.clone(),
    });
    let for_requests = conn.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::new(for_requests.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(for_requests.clone());
        let call = router.clone().oneshot(request.map(axum::body::Body::new));
        async move {
            let response = call.await;
            drop(in_flight);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut graceful = false;
    loop {
        let deadline = conn
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout.min(limits.header_timeout));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer.ip(), error = %e, "connection ended with an error");
                }
                break;
            }
            _ = conn.close.cancelled() => break,
            _ = shutdown.cancelled(), if !graceful => {
                graceful = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(client = %peer.ip(), "connection closed: header or idle timeout");
                    registry.metrics.closed("timeout");
                    break;
                }
            }
        }
    }
    registry.release(&conn);
}

/// The listen backlog: connections the kernel completes while the accept loop is busy. tokio's
/// default (1,024) overflows under a connection flood, and then new clients, legitimate ones
/// included, wait for SYN retransmits (1 s, 3 s, ...); the kernel caps it at `somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the intake listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's `bind`).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: max,
            max_connections_per_ip: per_ip,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 119, n])
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_order_at_the_caps() {
        let registry = Registry::default();
        let limits = limits(2, 10);
        let (a, _) = registry.admit(ip(1), &limits).unwrap();
        let (b, _) = registry.admit(ip(2), &limits).unwrap();
        a.authenticated();
        tokio::time::advance(Duration::from_secs(2)).await;
        // Both idle for 2 s: the never-authenticated one goes first.
        let (c, shed) = registry.admit(ip(3), &limits).unwrap();
        assert_eq!(shed, Some("connection cap"));
        assert!(b.close.is_cancelled() && !a.close.is_cancelled());
        // c is younger than the grace: the authenticated idle one goes.
        let (d, _) = registry.admit(ip(4), &limits).unwrap();
        assert!(a.close.is_cancelled() && !c.close.is_cancelled());
        // Nothing old enough: the new connection is refused.
        assert!(registry.admit(ip(5), &limits).is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        // A signed request in flight is never shed; one reading an unsigned body is, after
        // idle ones.
        c.authenticated();
        let _signed = InFlight::new(c.clone());
        let _unsigned = InFlight::new(d.clone());
        let _reading = d.reading_unsigned();
        let (e, _) = registry.admit(ip(6), &limits).unwrap();
        assert!(d.close.is_cancelled() && !c.close.is_cancelled());
        assert_eq!(registry.len(), 2);
        // A request in flight on a connection that never authenticated (an unsigned /check
        // waiting for its slot, a /health probe) is shed too: it cannot pin its place.
        tokio::time::advance(Duration::from_secs(2)).await;
        let _probe = InFlight::new(e.clone());
        let (f, _) = registry.admit(ip(7), &limits).unwrap();
        assert!(e.close.is_cancelled() && !c.close.is_cancelled());
        drop(f);
    }

    #[tokio::test(start_paused = true)]
    async fn per_address_cap_sheds_only_that_address() {
        let registry = Registry::default();
        let limits = limits(100, 2);
        let (other, _) = registry.admit(ip(9), &limits).unwrap();
        let (first, _) = registry.admit(ip(1), &limits).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let (second, _) = registry.admit(ip(1), &limits).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let (_, shed) = registry.admit(ip(1), &limits).unwrap();
        assert_eq!(shed, Some("per-client connection cap"));
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled() && !other.close.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_request_cycle() {
        let registry = Registry::default();
        let limits = limits(10, 10);
        let (conn, _) = registry.admit(ip(1), &limits).unwrap();
        let opened = Instant::now();
        assert_eq!(conn.deadline(&limits), Some(opened + limits.header_timeout));
        let request = InFlight::new(conn.clone());
        assert_eq!(conn.deadline(&limits), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(request);
        let done = Instant::now();
        assert_eq!(conn.deadline(&limits), Some(done + limits.idle_timeout));
        tokio::time::advance(Duration::from_secs(5)).await;
        conn.lock().first_byte = Some(Instant::now());
        assert_eq!(
            conn.deadline(&limits),
            Some(Instant::now() + limits.header_timeout)
        );
    }
}
