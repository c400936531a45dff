//! The accept loop both SMTP listeners share (mailman's own, [`crate::server`], and the post
//! office's bounce listener): take a connection, screen its address, give it a slot under the
//! per-address cap and then under the listener's total cap, and run its session in a tracked
//! task. What differs between the listeners (which addresses are welcome, what a refusal
//! logs and counts, what a session does) is a [`Gate`].
//!
//! A client address over its cap gets `421 4.7.0` before it can take one of the total slots,
//! so one client cannot lock its neighbours out (issue 11 F5). A refused connection is sent its
//! one-line reply from a tracked task, given 5 s at most, and closed; the loop never waits on
//! a client.
//!
//! Not here: the session's I/O loop and deadlines ([`crate::drive`]), the SMTP protocol
//! ([`crate::smtp`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::smtp::Reply;

/// How long a refused client is given to take its one-line reply.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);

/// How long the loop waits after a failed `accept` (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why a connection was refused before its session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`Gate::welcome`] said no (mailman: outside `allowed_networks`).
    Unwelcome,
    /// The client address has its cap of sessions open.
    PerClient,
    /// The listener has its cap of sessions open.
    Full,
}

/// What one listener supplies to [`accept_loop`].
pub trait Gate: Send + Sync + 'static {
    /// The listener's name in log lines.
    fn name(&self) -> &'static str;

    /// Whether `peer` may open a session at all; asked before any slot is taken.
    fn welcome(&self, peer: SocketAddr) -> bool {
        let _ = peer;
        true
    }

    /// Logs and counts a refusal, and gives the reply the client is sent before it is closed.
    fn refused(&self, peer: SocketAddr, why: Refused) -> Reply;

    /// Runs one admitted session to its end (the caller holds its slots until then).
    fn serve(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// The caps one or more listeners share: sessions in all, and sessions per client address.
#[derive(Clone)]
pub struct Caps {
    pub total: Arc<Semaphore>,
    pub per_client: Arc<ClientSlots>,
}

impl Caps {
    /// At most `total` sessions, and at most `per_client` from one address.
    pub fn new(total: usize, per_client: usize) -> Caps {
        Caps {
            total: Arc::new(Semaphore::new(total)),
            per_client: ClientSlots::new(per_client),
        }
    }

    /// Both slots for `peer`, or why not. The per-address cap comes first, so that a client
    /// over it never holds a total slot, even for a moment.
    fn admit(&self, peer: IpAddr) -> Result<(ClientSlot, OwnedSemaphorePermit), Refused> {
        let slot = self.per_client.take(peer).ok_or(Refused::PerClient)?;
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok((slot, permit))
    }
}

/// Accepts connections on `listener` until `shutdown`; sessions (and refusals) run in
/// `tracker`, so that the caller can wait for them.
pub async fn accept_loop<G: Gate>(
    gate: Arc<G>,
    listener: TcpListener,
    caps: Caps,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    let local = listener.local_addr().ok();
                    tracing::warn!(%err, address = ?local, "{}: accept failed", gate.name());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let admitted = if gate.welcome(peer) {
            caps.admit(peer.ip())
        } else {
            Err(Refused::Unwelcome)
        };
        match admitted {
            Ok(slots) => {
                let session = gate.clone().serve(socket, peer, shutdown.clone());
                tracker.spawn(async move {
                    session.await;
                    drop(slots);
                });
            }
            Err(why) => refuse(&tracker, socket, gate.refused(peer, why)),
        }
    }
}

/// Sends a refused connection its `text` (a `421` or `554` greeting) from a tracked task,
/// given [`REFUSAL_WRITE`] at most, and closes it.
fn refuse(tracker: &TaskTracker, mut socket: TcpStream, text: Reply) {
    tracker.spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_WRITE, socket.write_all(text.as_bytes())).await;
    });
}

/// Open sessions per client address, shared by every listener that shares the [`Caps`].
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

    /// The cap per address.
    pub fn limit(&self) -> usize {
        self.limit
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    /// A gate whose sessions wait for `release`, refusing 127.0.0.66, and counting refusals.
    struct Test {
        release: CancellationToken,
        served: AtomicUsize,
        refusals: std::sync::Mutex<Vec<Refused>>,
    }

    impl Gate for Test {
        fn name(&self) -> &'static str {
            "test listener"
        }

        fn welcome(&self, peer: SocketAddr) -> bool {
            peer.ip() != IpAddr::from([127, 0, 0, 66])
        }

        fn refused(&self, _peer: SocketAddr, why: Refused) -> Reply {
            self.refusals.lock().unwrap().push(why);
            format!("421 {why:?}\r\n")
        }

        async fn serve(
            self: Arc<Self>,
            mut socket: TcpStream,
            _peer: SocketAddr,
            _shutdown: CancellationToken,
        ) {
            self.served.fetch_add(1, Ordering::SeqCst);
            let _ = socket.write_all(b"220 hi\r\n").await;
            self.release.cancelled().await;
        }
    }

    async fn first_line(from: [u8; 4], to: SocketAddr) -> (TcpStream, String) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let mut stream = socket.connect(to).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        (stream, String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn caps_per_client_then_in_all_and_slots_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(Test {
            release: CancellationToken::new(),
            served: AtomicUsize::new(0),
            refusals: Default::default(),
        });
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let caps = Caps::new(3, 2);
        let accepting = tokio::spawn(accept_loop(
            gate.clone(),
            listener,
            caps.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        let mut open = Vec::new();
        for _ in 0..2 {
            let (s, line) = first_line([127, 0, 0, 61], addr).await;
            assert_eq!(line, "220 hi\r\n");
            open.push(s);
        }
        // A third from the same address: over its cap, while a neighbour still gets in.
        assert_eq!(
            first_line([127, 0, 0, 61], addr).await.1,
            "421 PerClient\r\n"
        );
        let (s, line) = first_line([127, 0, 0, 62], addr).await;
        assert_eq!(line, "220 hi\r\n");
        open.push(s);
        // All three slots are taken now.
        assert_eq!(first_line([127, 0, 0, 63], addr).await.1, "421 Full\r\n");
        assert_eq!(
            first_line([127, 0, 0, 66], addr).await.1,
            "421 Unwelcome\r\n"
        );
        assert_eq!(gate.served.load(Ordering::SeqCst), 3);
        // A refusal over the per-client cap took no total slot.
        assert_eq!(caps.total.available_permits(), 0);
        gate.release.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while caps.total.available_permits() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("slots come back when the sessions end");
        assert!(caps.per_client.open.lock().unwrap().is_empty());
        assert_eq!(
            *gate.refusals.lock().unwrap(),
            [Refused::PerClient, Refused::Full, Refused::Unwelcome]
        );
        shutdown.cancel();
        accepting.await.unwrap();
        tracker.close();
        tracker.wait().await;
    }
}
