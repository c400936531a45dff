//! A real, scriptable SMTP server for tests: it listens on a loopback address, answers as a
//! [`Behaviour`] says, and records every transaction it accepted.
//!
//! What it does: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY, and STARTTLS with a
//! self-signed certificate ([`crate::tls`]). Commands are parsed with `smtp-proto`. Pipelined
//! commands are taken from the read buffer one by one and answered in order (the replies of
//! one batch are written together, as real servers do). DATA is dot-unstuffed and kept
//! byte-exact, CRLFs included. Each connection reads the behaviour current when it was
//! accepted, so [`SmtpReceiver::set_behaviour`] affects the next connections only.
//!
//! What it does not do: AUTH, BDAT/CHUNKING, relay checks, or real limits: only memory is
//! bounded (4 KiB command lines, 64 MiB messages by default, 10 000 remembered messages, see
//! [`Behaviour::remember`]). A message whose connection drops before the reply to its final
//! dot is not recorded.
//!
//! Faults for fault-injection runs, switched while the receiver runs and applied at once to
//! every connection, open or new:
//! - [`SmtpReceiver::set_faults`]: a random share of messages answered `451`/`421` after the
//!   final dot, and a random share of DATA transfers cut (connection closed, no reply);
//! - [`SmtpReceiver::pause`] / [`SmtpReceiver::resume`]: the port stops listening (connections
//!   are refused) and every open session answers its next command `421` and closes, as a
//!   server being stopped does; a transaction already past its final dot gets its reply first.
//!
//! A message is recorded in the same step that writes its 2xx reply, so none of these faults
//! records a message the client was not told about; [`FaultCounts`] says how often each fired.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use hedwig_testkit::smtp::{Behaviour, Phase, SmtpReceiver};
//!
//! let mx = SmtpReceiver::start(
//!     "127.0.0.2:0".parse().unwrap(),
//!     Behaviour::new()
//!         .starttls()
//!         .size(10_000_000)
//!         .rcpt("bad@example.test", "550 5.1.1 no such user")
//!         .rcpt("later@example.test", "451 4.7.1 greylisted")
//!         .stall_at(Phase::Greeting, Duration::from_millis(200)),
//! )
//! .await?;
//! // ... deliver to mx.addr() ...
//! let got = mx.wait_for(1, Duration::from_secs(5)).await.expect("one message");
//! assert_eq!(got[0].rcpt_to, ["good@example.test"]);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCert;

/// RFC 5321 §4.5.3.1.4 allows 512 octets per command line; we accept up to this many.
const MAX_LINE: usize = 4096;
/// Read buffer chunk.
const READ_CHUNK: usize = 16 * 1024;
/// How many accepted messages and command lines are remembered by default.
const LOG_MAX: usize = 10_000;

/// A point in an SMTP session where the receiver can drop the connection or stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Right after accepting the connection, before the greeting.
    Greeting,
    /// On EHLO or HELO, before the reply.
    Ehlo,
    /// On STARTTLS, before the reply.
    StartTls,
    /// On MAIL FROM, before the reply.
    Mail,
    /// On RCPT TO, before the reply.
    Rcpt,
    /// On the DATA command, before the 354.
    Data,
    /// After the final dot, before the reply (the classic "was it delivered?" case).
    DataEnd,
}

/// An ESMTP extension the receiver can advertise in its EHLO reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// RFC 2920.
    Pipelining,
    /// RFC 6152.
    EightBitMime,
    /// RFC 6531.
    SmtpUtf8,
    /// RFC 1870, with the advertised limit; a larger `SIZE=` in MAIL gets 552.
    Size(usize),
    /// RFC 3207 (only advertised before TLS is on).
    StartTls,
    /// RFC 2034.
    EnhancedStatusCodes,
}

/// How the receiver behaves. Replies are full reply text such as `"451 4.7.1 greylisted"`;
/// separate lines with `\n` for a multi-line reply (`"550 5.7.1 no\n550 5.7.1 really"`).
#[derive(Clone, Debug)]
pub struct Behaviour {
    hostname: String,
    extensions: Vec<Extension>,
    greeting: Option<String>,
    ehlo: Option<String>,
    mail: Option<String>,
    rcpt: HashMap<String, String>,
    rcpt_default: Option<String>,
    data: Option<String>,
    message: Option<String>,
    drop_at: Option<Phase>,
    stall_at: Option<(Phase, Duration)>,
    max_messages_per_connection: Option<usize>,
    max_message_bytes: usize,
    idle_timeout: Duration,
    remember: usize,
    cert_names: Vec<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl Behaviour {
    /// Accepts everything; advertises PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES.
    pub fn new() -> Self {
        Self {
            hostname: "mx.testkit.invalid".to_string(),
            extensions: vec![
                Extension::Pipelining,
                Extension::EightBitMime,
                Extension::SmtpUtf8,
                Extension::EnhancedStatusCodes,
            ],
            greeting: None,
            ehlo: None,
            mail: None,
            rcpt: HashMap::new(),
            rcpt_default: None,
            data: None,
            message: None,
            drop_at: None,
            stall_at: None,
            max_messages_per_connection: None,
            max_message_bytes: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            remember: LOG_MAX,
            cert_names: Vec::new(),
        }
    }

    /// The names STARTTLS's certificate is made for (default: the listening IP address),
    /// e.g. the MX host name, so that a verifying client accepts it for that name.
    pub fn cert_names(mut self, names: &[&str]) -> Self {
        self.cert_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The name in the greeting and EHLO reply (default `mx.testkit.invalid`).
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = hostname.to_string();
        self
    }

    /// Replaces the advertised extensions (an empty list advertises none).
    pub fn extensions(mut self, extensions: &[Extension]) -> Self {
        self.extensions = extensions.to_vec();
        self
    }

    /// Also advertises STARTTLS and serves it with a self-signed certificate.
    pub fn starttls(self) -> Self {
        self.with(Extension::StartTls)
    }

    /// Also advertises `SIZE limit` (and rejects a larger declared `SIZE=` with 552).
    pub fn size(mut self, limit: usize) -> Self {
        self.extensions.retain(|e| !matches!(e, Extension::Size(_)));
        self.with(Extension::Size(limit))
    }

    /// Adds one extension to those advertised.
    pub fn with(mut self, extension: Extension) -> Self {
        if !self.extensions.contains(&extension) {
            self.extensions.push(extension);
        }
        self
    }

    /// Stops advertising one extension (for `Size`, any limit).
    pub fn without(mut self, extension: Extension) -> Self {
        self.extensions.retain(|e| match (e, extension) {
            (Extension::Size(_), Extension::Size(_)) => false,
            (e, x) => *e != x,
        });
        self
    }

    /// The greeting instead of `220 <hostname> ESMTP`, e.g. `"421 4.3.2 busy"` or `"554 no"`.
    /// A non-2xx greeting is followed by closing the connection after QUIT or any command.
    pub fn greeting(mut self, reply: &str) -> Self {
        self.greeting = Some(reply.to_string());
        self
    }

    /// The reply to EHLO instead of the capability list (e.g. `"502 5.5.1 no EHLO"` to make
    /// the client fall back to HELO, which is always answered 250).
    pub fn ehlo(mut self, reply: &str) -> Self {
        self.ehlo = Some(reply.to_string());
        self
    }

    /// The reply to every MAIL FROM (default `250 2.1.0 ok`).
    pub fn mail(mut self, reply: &str) -> Self {
        self.mail = Some(reply.to_string());
        self
    }

    /// The reply to `RCPT TO:<address>` (address compared case-insensitively).
    pub fn rcpt(mut self, address: &str, reply: &str) -> Self {
        self.rcpt
            .insert(address.to_ascii_lowercase(), reply.to_string());
        self
    }

    /// The reply to every recipient without its own [`Behaviour::rcpt`] (default `250`).
    pub fn rcpt_default(mut self, reply: &str) -> Self {
        self.rcpt_default = Some(reply.to_string());
        self
    }

    /// The reply to the DATA command instead of `354` (e.g. `"554 5.5.1 no"`).
    pub fn data(mut self, reply: &str) -> Self {
        self.data = Some(reply.to_string());
        self
    }

    /// The reply after the final dot (default `250 2.0.0 queued`). Only a 2xx reply records
    /// the message in [`SmtpReceiver::received`].
    pub fn message(mut self, reply: &str) -> Self {
        self.message = Some(reply.to_string());
        self
    }

    /// Closes the connection (without a reply) when `phase` is reached.
    pub fn drop_at(mut self, phase: Phase) -> Self {
        self.drop_at = Some(phase);
        self
    }

    /// Sleeps `pause` before replying at `phase` (then carries on normally).
    pub fn stall_at(mut self, phase: Phase, pause: Duration) -> Self {
        self.stall_at = Some((phase, pause));
        self
    }

    /// After `n` accepted messages on one connection, answers the next MAIL with
    /// `421 4.7.0 too many messages` and closes.
    pub fn max_messages_per_connection(mut self, n: usize) -> Self {
        self.max_messages_per_connection = Some(n);
        self
    }

    /// Messages longer than this are answered `552 5.3.4` after the dot (default 64 MiB);
    /// this bounds the receiver's memory, it is not meant as a protocol limit.
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// How many accepted messages (and command lines) the receiver keeps for
    /// [`SmtpReceiver::received`] (default 10 000; later ones are counted, not kept). Only the
    /// behaviour given to [`SmtpReceiver::start`] sets this.
    pub fn remember(mut self, n: usize) -> Self {
        self.remember = n;
        self
    }

    /// How long a client may stay silent before `421` and close (default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// One accepted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The reverse-path, without angle brackets (empty for the null sender).
    pub mail_from: String,
    /// The MAIL FROM parameters as sent, e.g. `"BODY=8BITMIME SMTPUTF8"` (may be empty).
    pub mail_params: String,
    /// Recipients that were answered 2xx, in order.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, exactly as received (CRLF kept, final dot line removed).
    pub data: Vec<u8>,
    /// Whether the transaction happened after STARTTLS.
    pub tls: bool,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the message was recorded (just before its 2xx reply was written).
    pub at: SystemTime,
}

/// Faults the receiver injects at random, switched with [`SmtpReceiver::set_faults`]. Both
/// shares are per mille (0 = never, 1000 = always). The default injects nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Messages answered with a temporary failure after the final dot instead of `250`,
    /// alternately `451 4.3.0` (the session goes on) and `421 4.3.0` (then closed). Not
    /// recorded.
    pub tempfail_per_mille: u32,
    /// DATA transfers cut: after the `354` and the first chunk of message data, the
    /// connection is closed without a reply. Not recorded.
    pub drop_in_data_per_mille: u32,
}

/// How often each fault fired since the receiver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Messages answered `451`/`421` by [`Faults::tempfail_per_mille`].
    pub tempfails: u64,
    /// DATA transfers cut by [`Faults::drop_in_data_per_mille`].
    pub drops_in_data: u64,
    /// Sessions answered `421` and closed because of [`SmtpReceiver::pause`].
    pub closed_by_pause: u64,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    commands: Mutex<Vec<String>>,
    count: watch::Sender<usize>,
    connections: watch::Sender<usize>,
    cert: TestCert,
    remember: usize,
    faults: Mutex<Faults>,
    /// splitmix64 state for the random fault decisions.
    rng: AtomicU64,
    /// Bumped by every pause: sessions accepted before it close at their next command.
    generation: AtomicU64,
    tempfails: AtomicU64,
    drops_in_data: AtomicU64,
    closed_by_pause: AtomicU64,
}

impl Shared {
    fn faults(&self) -> Faults {
        match self.faults.lock() {
            Ok(f) => *f,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&self, per_mille: u32) -> bool {
        if per_mille == 0 {
            return false;
        }
        // splitmix64: a fixed sequence per receiver, good enough for fault decisions.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        z % 1000 < u64::from(per_mille)
    }

    fn log_command(&self, line: &str) {
        if let Ok(mut log) = self.commands.lock() {
            if log.len() < self.remember {
                log.push(line.to_string());
            }
        }
    }

    fn record(&self, message: Received) {
        if let Ok(mut received) = self.received.lock() {
            if received.len() < self.remember {
                received.push(message);
            }
        }
        self.count.send_modify(|n| *n += 1);
    }
}

/// A running SMTP receiver. Dropping it closes the listener and every open connection.
pub struct SmtpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

/// Orders to the accept loop.
enum Control {
    /// Close the listening socket, then say so.
    Close(oneshot::Sender<()>),
    /// Accept on this (new) listening socket.
    Listen(TcpListener),
}

impl SmtpReceiver {
    /// Listens on `addr` (port 0 picks a free port; port 25 on 127.0.0.2+ works as root).
    pub async fn start(addr: SocketAddr, behaviour: Behaviour) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let remember = behaviour.remember;
        let cert = if behaviour.cert_names.is_empty() {
            TestCert::new(&[&addr.ip().to_string()])
        } else {
            let names: Vec<&str> = behaviour.cert_names.iter().map(String::as_str).collect();
            TestCert::new(&names)
        };
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            received: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            connections: watch::channel(0).0,
            cert,
            remember,
            faults: Mutex::new(Faults::default()),
            rng: AtomicU64::new(u64::from(addr.port())),
            generation: AtomicU64::new(0),
            tempfails: AtomicU64::new(0),
            drops_in_data: AtomicU64::new(0),
            closed_by_pause: AtomicU64::new(0),
        });
        let (control, orders) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), orders));
        Ok(Self {
            addr,
            shared,
            control,
            task,
        })
    }

    /// Switches the random faults; every connection, open or new, sees the change at its next
    /// message. `Faults::default()` switches them off.
    pub fn set_faults(&self, faults: Faults) {
        match self.shared.faults.lock() {
            Ok(mut f) => *f = faults,
            Err(poisoned) => *poisoned.into_inner() = faults,
        }
    }

    /// How often each fault fired so far.
    pub fn fault_counts(&self) -> FaultCounts {
        FaultCounts {
            tempfails: self.shared.tempfails.load(Ordering::Relaxed),
            drops_in_data: self.shared.drops_in_data.load(Ordering::Relaxed),
            closed_by_pause: self.shared.closed_by_pause.load(Ordering::Relaxed),
        }
    }

    /// Stops the server as a shutdown would: when this returns, the port no longer listens
    /// (new connections are refused), and every open session answers its next command with
    /// `421 4.3.2` and closes. [`SmtpReceiver::resume`] starts listening again.
    pub async fn pause(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let (done, closed) = oneshot::channel();
        if self.control.send(Control::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    /// Listens again on the same address after [`SmtpReceiver::pause`] (binding is retried
    /// for up to 5 s). Harmless when not paused: the new socket replaces the old one.
    pub async fn resume(&self) -> io::Result<()> {
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    return self
                        .control
                        .send(Control::Listen(listener))
                        .map_err(|_| io::Error::other("the receiver's accept loop is gone"));
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot bind")))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate STARTTLS presents (to build a verifying client).
    pub fn cert(&self) -> &TestCert {
        &self.shared.cert
    }

    /// Replaces the behaviour for connections accepted from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        match self.shared.behaviour.lock() {
            Ok(mut b) => *b = behaviour,
            Err(poisoned) => *poisoned.into_inner() = behaviour,
        }
    }

    /// Every accepted transaction so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` messages were accepted, and returns all of them; `None` if
    /// that did not happen within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Option<Vec<Received>> {
        let mut count = self.shared.count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        reached.then(|| self.received())
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        *self.shared.connections.borrow()
    }

    /// Waits until at least `n` connections were accepted; false on timeout.
    pub async fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        let mut count = self.shared.connections.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        reached
    }

    /// Every command line received so far over all connections, without CRLF (DATA content
    /// excluded), e.g. `["EHLO client", "MAIL FROM:<a@b>", ...]`.
    pub fn commands(&self) -> Vec<String> {
        self.shared
            .commands
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts on `listener` while there is one (`None` while paused: never ready).
async fn accept_on(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut orders: mpsc::UnboundedReceiver<Control>,
) {
    // Sessions live in this set, so aborting the accept task ends them all.
    let mut sessions = JoinSet::new();
    let mut listener = Some(listener);
    loop {
        tokio::select! {
            Some(order) = orders.recv() => match order {
                Control::Close(done) => {
                    listener = None;
                    let _ = done.send(());
                }
                Control::Listen(new) => listener = Some(new),
            },
            accepted = accept_on(listener.as_ref()) => {
                let Ok((stream, peer)) = accepted else { continue };
                shared.connections.send_modify(|n| *n += 1);
                let behaviour = match shared.behaviour.lock() {
                    Ok(b) => b.clone(),
                    Err(poisoned) => poisoned.into_inner().clone(),
                };
                let shared = shared.clone();
                let generation = shared.generation.load(Ordering::SeqCst);
                sessions.spawn(async move {
                    let mut session = Session::new(stream, peer, behaviour, shared, generation);
                    if let Err(e) = session.run().await {
                        tracing::debug!(%peer, error = %e, "test SMTP session ended");
                    }
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// The connection, before or after STARTTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while upgrading.
    Gone,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => write_flush(s, buf).await,
            Conn::Tls(s) => write_flush(s.as_mut(), buf).await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8]) -> io::Result<()> {
    s.write_all(buf).await?;
    s.flush().await
}

/// What the session does after handling one command.
enum Next {
    Continue,
    Close,
}

struct Session {
    conn: Conn,
    peer: SocketAddr,
    b: Behaviour,
    shared: Arc<Shared>,
    /// Bytes read but not yet consumed (pipelined commands wait here).
    input: Vec<u8>,
    /// Replies not yet written (flushed before every read, as one batch).
    output: Vec<u8>,
    tls: bool,
    helo: Option<String>,
    mail: Option<(String, String)>,
    rcpts: Vec<String>,
    accepted: usize,
    /// The pause generation the session was accepted in.
    generation: u64,
}

impl Session {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        b: Behaviour,
        shared: Arc<Shared>,
        generation: u64,
    ) -> Self {
        Self {
            conn: Conn::Plain(stream),
            peer,
            b,
            shared,
            input: Vec::new(),
            output: Vec::new(),
            tls: false,
            helo: None,
            mail: None,
            rcpts: Vec::new(),
            accepted: 0,
            generation,
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        if self.hold(Phase::Greeting).await? {
            return Ok(());
        }
        let greeting = self
            .b
            .greeting
            .clone()
            .unwrap_or_else(|| format!("220 {} ESMTP hedwig-testkit", self.b.hostname));
        let refuse = !greeting.starts_with('2');
        self.reply(&greeting);
        self.flush().await?;
        loop {
            let Some(line) = self.next_line().await? else {
                return Ok(());
            };
            if refuse {
                // RFC 5321 §3.1: after a 554 greeting the server waits for QUIT.
                if line.eq_ignore_ascii_case(b"QUIT\r\n") || line.eq_ignore_ascii_case(b"QUIT\n") {
                    self.reply("221 2.0.0 bye");
                } else {
                    self.reply("503 5.5.1 no service");
                }
                self.flush().await?;
                return Ok(());
            }
            if self.shared.generation.load(Ordering::SeqCst) != self.generation {
                self.shared.closed_by_pause.fetch_add(1, Ordering::Relaxed);
                self.reply("421 4.3.2 service shutting down");
                self.flush().await?;
                return Ok(());
            }
            if let Next::Close = self.command(&line).await? {
                self.flush().await?;
                return Ok(());
            }
        }
    }

    /// Applies a stall or drop at `phase`; true when the connection must close now.
    async fn hold(&mut self, phase: Phase) -> io::Result<bool> {
        if let Some((at, pause)) = self.b.stall_at {
            if at == phase {
                self.flush().await?;
                tokio::time::sleep(pause).await;
            }
        }
        if self.b.drop_at == Some(phase) {
            self.flush().await?;
            return Ok(true);
        }
        Ok(false)
    }

    fn reply(&mut self, text: &str) {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            match (line.get(..3), line.get(4..)) {
                (Some(code), Some(rest)) if !last => self
                    .output
                    .extend_from_slice(format!("{code}-{rest}\r\n").as_bytes()),
                (Some(code), None) if !last => self
                    .output
                    .extend_from_slice(format!("{code}-\r\n").as_bytes()),
                _ => self
                    .output
                    .extend_from_slice(format!("{line}\r\n").as_bytes()),
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        match tokio::time::timeout(self.b.idle_timeout, self.conn.write_all(&out)).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Reads more input (flushing pending replies first); false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        self.flush().await?;
        let mut chunk = vec![0u8; READ_CHUNK];
        match tokio::time::timeout(self.b.idle_timeout, self.conn.read(&mut chunk)).await {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.reply("421 4.4.2 idle too long");
                self.flush().await?;
                Ok(false)
            }
        }
    }

    /// The next command line including its LF; `None` when the client went away.
    async fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.input.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = self.input.drain(..=end).collect();
                return Ok(Some(line));
            }
            if self.input.len() > MAX_LINE {
                self.reply("500 5.5.2 line too long");
                self.flush().await?;
                return Ok(None);
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> io::Result<Next> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        self.shared.log_command(&text);
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(smtp_proto::Error::UnknownCommand) => {
                self.reply("500 5.5.1 command not recognized");
                return Ok(Next::Continue);
            }
            Err(e) => {
                self.reply(&format!("501 5.5.4 syntax error: {e:?}"));
                return Ok(Next::Continue);
            }
        };
        match request {
            Request::Ehlo { host } => self.ehlo(host, true).await,
            Request::Helo { host } => self.ehlo(host, false).await,
            Request::StartTls => self.starttls().await,
            Request::Mail { from } => self.mail_from(from.address, &text, from.size).await,
            Request::Rcpt { to } => self.rcpt_to(to.address).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.reset();
                self.reply("250 2.0.0 ok");
                Ok(Next::Continue)
            }
            Request::Noop { .. } => {
                self.reply("250 2.0.0 ok");
                Ok(Next::Continue)
            }
            Request::Vrfy { .. } => {
                self.reply("252 2.5.0 cannot verify");
                Ok(Next::Continue)
            }
            Request::Quit => {
                self.reply("221 2.0.0 bye");
                Ok(Next::Close)
            }
            _ => {
                self.reply("502 5.5.1 not implemented");
                Ok(Next::Continue)
            }
        }
    }

    fn reset(&mut self) {
        self.mail = None;
        self.rcpts.clear();
    }

    fn advertises(&self, wanted: fn(&Extension) -> bool) -> bool {
        self.b.extensions.iter().any(wanted)
    }

    async fn ehlo(&mut self, host: String, extended: bool) -> io::Result<Next> {
        if self.hold(Phase::Ehlo).await? {
            return Ok(Next::Close);
        }
        self.reset();
        if let (true, Some(reply)) = (extended, self.b.ehlo.clone()) {
            self.reply(&reply);
            return Ok(Next::Continue);
        }
        self.helo = Some(host.clone());
        if !extended {
            self.reply(&format!("250 {} hello {host}", self.b.hostname));
            return Ok(Next::Continue);
        }
        let mut lines = vec![format!("250 {} hello {host}", self.b.hostname)];
        for extension in &self.b.extensions {
            lines.push(match extension {
                Extension::Pipelining => "250 PIPELINING".to_string(),
                Extension::EightBitMime => "250 8BITMIME".to_string(),
                Extension::SmtpUtf8 => "250 SMTPUTF8".to_string(),
                Extension::Size(n) => format!("250 SIZE {n}"),
                Extension::StartTls if self.tls => continue,
                Extension::StartTls => "250 STARTTLS".to_string(),
                Extension::EnhancedStatusCodes => "250 ENHANCEDSTATUSCODES".to_string(),
            });
        }
        self.reply(&lines.join("\n"));
        Ok(Next::Continue)
    }

    async fn starttls(&mut self) -> io::Result<Next> {
        if self.tls || !self.advertises(|e| *e == Extension::StartTls) {
            self.reply("503 5.5.1 TLS not available");
            return Ok(Next::Continue);
        }
        if self.hold(Phase::StartTls).await? {
            return Ok(Next::Close);
        }
        self.reply("220 2.0.0 ready to start TLS");
        self.flush().await?;
        // RFC 3207 §4.2: anything the client pipelined after STARTTLS is discarded.
        self.input.clear();
        let Conn::Plain(stream) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            return Ok(Next::Close);
        };
        let acceptor = TlsAcceptor::from(self.shared.cert.server_config());
        let tls = tokio::time::timeout(self.b.idle_timeout, acceptor.accept(stream))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        self.conn = Conn::Tls(Box::new(tls));
        self.tls = true;
        // RFC 3207 §4.2: the session starts over; the client must EHLO again.
        self.helo = None;
        self.reset();
        Ok(Next::Continue)
    }

    async fn mail_from(&mut self, address: String, line: &str, size: usize) -> io::Result<Next> {
        if self.hold(Phase::Mail).await? {
            return Ok(Next::Close);
        }
        if self.helo.is_none() {
            self.reply("503 5.5.1 EHLO first");
            return Ok(Next::Continue);
        }
        if self.mail.is_some() {
            self.reply("503 5.5.1 nested MAIL");
            return Ok(Next::Continue);
        }
        if let Some(max) = self.b.max_messages_per_connection {
            if self.accepted >= max {
                self.reply("421 4.7.0 too many messages on this connection");
                return Ok(Next::Close);
            }
        }
        let limit = self.b.extensions.iter().find_map(|e| match e {
            Extension::Size(n) => Some(*n),
            _ => None,
        });
        if let Some(limit) = limit {
            if size > limit {
                self.reply("552 5.3.4 message too big");
                return Ok(Next::Continue);
            }
        }
        let reply = self
            .b
            .mail
            .clone()
            .unwrap_or_else(|| "250 2.1.0 ok".to_string());
        if reply.starts_with('2') {
            let params = line
                .find('>')
                .map(|i| line[i + 1..].trim().to_string())
                .unwrap_or_default();
            self.mail = Some((address, params));
        }
        let close = reply.starts_with("421");
        self.reply(&reply);
        Ok(if close { Next::Close } else { Next::Continue })
    }

    async fn rcpt_to(&mut self, address: String) -> io::Result<Next> {
        if self.hold(Phase::Rcpt).await? {
            return Ok(Next::Close);
        }
        if self.mail.is_none() {
            self.reply("503 5.5.1 MAIL first");
            return Ok(Next::Continue);
        }
        let reply = self
            .b
            .rcpt
            .get(&address.to_ascii_lowercase())
            .or(self.b.rcpt_default.as_ref())
            .cloned()
            .unwrap_or_else(|| "250 2.1.5 ok".to_string());
        if reply.starts_with('2') {
            self.rcpts.push(address);
        }
        let close = reply.starts_with("421");
        self.reply(&reply);
        Ok(if close { Next::Close } else { Next::Continue })
    }

    async fn data(&mut self) -> io::Result<Next> {
        if self.hold(Phase::Data).await? {
            return Ok(Next::Close);
        }
        if self.mail.is_none() {
            self.reply("503 5.5.1 MAIL first");
            return Ok(Next::Continue);
        }
        if self.rcpts.is_empty() {
            // RFC 2920 §3.1: DATA after no accepted recipient is refused.
            self.reply("554 5.5.1 no valid recipients");
            return Ok(Next::Continue);
        }
        if let Some(reply) = self.b.data.clone() {
            let close = reply.starts_with("421");
            self.reply(&reply);
            self.reset();
            return Ok(if close { Next::Close } else { Next::Continue });
        }
        self.reply("354 end data with <CR><LF>.<CR><LF>");
        if self
            .shared
            .chance(self.shared.faults().drop_in_data_per_mille)
        {
            // Hang up in the middle of the transfer: after the first chunk of the message.
            if self.input.is_empty() {
                self.fill().await?;
            }
            self.shared.drops_in_data.fetch_add(1, Ordering::Relaxed);
            self.reset();
            return Ok(Next::Close);
        }
        let mut reader = DataReader::new(self.b.max_message_bytes);
        loop {
            if let Some(used) = reader.feed(&self.input) {
                self.input.drain(..used);
                break;
            }
            self.input.clear();
            if !self.fill().await? {
                return Ok(Next::Close);
            }
        }
        if self.hold(Phase::DataEnd).await? {
            return Ok(Next::Close);
        }
        let (mail_from, mail_params) = self.mail.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpts);
        if reader.overflow {
            self.reply("552 5.3.4 message too big");
            return Ok(Next::Continue);
        }
        if self.shared.chance(self.shared.faults().tempfail_per_mille) {
            let n = self.shared.tempfails.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(2) {
                self.reply("451 4.3.0 fault injected: try again later");
                return Ok(Next::Continue);
            }
            self.reply("421 4.3.0 fault injected: closing");
            return Ok(Next::Close);
        }
        let reply = self
            .b
            .message
            .clone()
            .unwrap_or_else(|| "250 2.0.0 queued".to_string());
        if reply.starts_with('2') {
            self.accepted += 1;
            self.shared.record(Received {
                mail_from,
                mail_params,
                rcpt_to,
                data: reader.data,
                tls: self.tls,
                helo: self.helo.clone().unwrap_or_default(),
                peer: self.peer,
                at: SystemTime::now(),
            });
        }
        let close = reply.starts_with("421");
        self.reply(&reply);
        Ok(if close { Next::Close } else { Next::Continue })
    }
}

/// The receiver's DATA reading on its own, for property tests of SMTP transparency: feeds
/// `chunks` in order (as reads from the socket would come) and returns the dot-unstuffed body
/// and the offset just past the final `.` CRLF in the concatenated input (`None`: no end found).
#[doc(hidden)]
pub fn read_data(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
    let mut reader = DataReader::new(usize::MAX);
    let mut offset = 0;
    for chunk in chunks {
        if let Some(used) = reader.feed(chunk) {
            return (reader.data, Some(offset + used));
        }
        offset += chunk.len();
    }
    (reader.data, None)
}

/// Collects a DATA body: RFC 5321 §4.5.2 dot-unstuffing, ends at `CRLF.CRLF`. Pure, so it can
/// be fed input split anywhere.
#[derive(Debug)]
struct DataReader {
    data: Vec<u8>,
    state: DataState,
    limit: usize,
    overflow: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataState {
    /// At the start of a line.
    LineStart,
    /// Saw a `.` at the start of a line.
    Dot,
    /// Saw `.\r` at the start of a line.
    DotCr,
    /// Inside a line.
    Middle,
    /// Saw `\r` inside a line.
    Cr,
}

impl DataReader {
    fn new(limit: usize) -> Self {
        Self {
            data: Vec::new(),
            state: DataState::LineStart,
            limit,
            overflow: false,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.data.len() < self.limit {
            self.data.push(byte);
        } else {
            self.overflow = true;
        }
    }

    /// Feeds bytes; `Some(n)` when the final dot line ended at `input[n - 1]`.
    fn feed(&mut self, input: &[u8]) -> Option<usize> {
        for (i, &byte) in input.iter().enumerate() {
            self.state = match (self.state, byte) {
                (DataState::LineStart, b'.') => DataState::Dot,
                (DataState::Dot, b'\r') => DataState::DotCr,
                (DataState::DotCr, b'\n') => return Some(i + 1),
                (DataState::DotCr, _) => {
                    // ".\r" then something else: the dot was stuffing, the CR is content.
                    self.push(b'\r');
                    self.push(byte);
                    Self::after(byte)
                }
                (DataState::Cr, b'\n') => {
                    self.push(byte);
                    DataState::LineStart
                }
                (_, _) => {
                    self.push(byte);
                    Self::after(byte)
                }
            };
        }
        None
    }

    fn after(byte: u8) -> DataState {
        if byte == b'\r' {
            DataState::Cr
        } else {
            DataState::Middle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> (Vec<u8>, Option<usize>) {
        let mut reader = DataReader::new(1 << 20);
        let end = reader.feed(input);
        (reader.data, end)
    }

    #[test]
    fn unstuffs_dots_and_stops_at_final_dot() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
        let (data, end) = read_all(input);
        assert_eq!(data, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(&input[end.unwrap()..], b"QUIT\r\n");
    }

    #[test]
    fn empty_message_and_dot_not_at_line_start() {
        assert_eq!(read_all(b".\r\n"), (Vec::new(), Some(3)));
        let (data, end) = read_all(b"a.\r\n.\r\n");
        assert_eq!((data.as_slice(), end), (&b"a.\r\n"[..], Some(7)));
    }

    #[test]
    fn same_result_for_input_split_at_every_position() {
        let input = b"A\r\n..B\r\n.\rC\r\nD\r\n.\r\nNEXT";
        let (whole, whole_end) = read_all(input);
        assert_eq!(whole, b"A\r\n.B\r\n\rC\r\nD\r\n");
        for split in 0..input.len() {
            let mut reader = DataReader::new(1 << 20);
            let end = match reader.feed(&input[..split]) {
                Some(n) => Some(n),
                None => reader.feed(&input[split..]).map(|n| n + split),
            };
            assert_eq!((&reader.data, end), (&whole, whole_end), "split at {split}");
        }
    }

    #[test]
    fn over_the_limit_is_flagged_not_stored() {
        let mut reader = DataReader::new(4);
        assert_eq!(reader.feed(b"123456\r\n.\r\n"), Some(11));
        assert!(reader.overflow);
        assert_eq!(reader.data, b"1234");
    }
}
