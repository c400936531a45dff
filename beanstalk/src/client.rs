//! [`Client`]: one beanstalkd connection with every command as an async method, timeouts,
//! and reconnect-on-next-call.
//!
//! The client remembers its address, the tube it `use`s and the tubes it `watch`es. After an
//! error that spoils the connection ([`Error::is_connection_error`]), or when a call was
//! cancelled half-way, or when the idle connection was closed by the server, the *next*
//! call opens a new connection and restores `use`/`watch` before sending its command. The
//! failing call itself is never retried: a `put` whose reply was lost may or may not have
//! been queued, and jobs reserved on the dead connection are back in the ready queue.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::proto::{
    validate_tube, Command, Failure, Job, Reply, DEFAULT_MAX_BODY, DEFAULT_MAX_LINE,
};
use crate::stats::{parse_list, Stats};

const DEFAULT_TUBE: &str = "default";

/// Most commands [`Client::reserve_ready`] and [`Client::delete_all`] send in one write:
/// they must fit in the socket buffers while their replies wait unread (a `delete` is about
/// 16 bytes, its reply 9).
pub const MAX_PIPELINE: usize = 256;

/// The jobs [`Client::reserve_ready`] took.
#[derive(Debug, Default)]
pub struct Ready {
    /// The jobs reserved, in the order beanstalkd gave them.
    pub jobs: Vec<Job>,
    /// beanstalkd answered `DEADLINE_SOON` to at least one of the reserves.
    pub deadline_soon: bool,
}

/// Connection settings. `Config::default()` suits hedwig.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limit on connecting (TCP connect plus restoring `use`/`watch`).
    pub connect_timeout: Duration,
    /// Limit on each command other than `reserve` (write and reply). `reserve_with_timeout`
    /// gets its own timeout plus this. `None`: wait forever.
    pub io_timeout: Option<Duration>,
    /// Longest reply line accepted.
    pub max_reply_line: usize,
    /// Largest job body or YAML reply accepted from the server.
    pub max_body: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Some(Duration::from_secs(30)),
            max_reply_line: DEFAULT_MAX_LINE,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// One connection to beanstalkd. Not `Clone`: a reserved job belongs to the connection that
/// reserved it, so the job's `delete`/`release`/`bury`/`touch` must go through the same
/// `Client`.
pub struct Client {
    addr: String,
    config: Config,
    conn: Option<Connection<TcpStream>>,
    /// Set while a command is on the wire; still set on the next call means the previous
    /// call's future was dropped mid-command and the stream is out of step.
    in_flight: bool,
    used: String,
    watched: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("connected", &self.conn.is_some())
            .field("used", &self.used)
            .field("watched", &self.watched)
            .finish()
    }
}

/// Whole seconds for the protocol, saturating (beanstalkd takes 32-bit seconds).
fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

impl Client {
    /// Connects to `addr` (`"host:port"`) with the default [`Config`].
    pub async fn connect(addr: impl Into<String>) -> Result<Client> {
        Client::connect_with(addr, Config::default()).await
    }

    /// Connects to `addr` with `config`.
    pub async fn connect_with(addr: impl Into<String>, config: Config) -> Result<Client> {
        let mut client = Client {
            addr: addr.into(),
            config,
            conn: None,
            in_flight: false,
            used: DEFAULT_TUBE.to_owned(),
            watched: vec![DEFAULT_TUBE.to_owned()],
        };
        client.reconnect().await?;
        Ok(client)
    }

    /// The address this client (re)connects to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether a connection is open and believed healthy. A client without one reconnects
    /// on its next call.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some() && !self.in_flight
    }

    /// Whether the last connection was lost (connection error or failed reconnect), as
    /// opposed to merely left out of step by a cancelled call.
    pub(crate) fn lost_connection(&self) -> bool {
        self.conn.is_none()
    }

    /// The tube `put` goes to (as remembered by the client).
    pub fn used_tube(&self) -> &str {
        &self.used
    }

    /// The tubes `reserve` takes from (as remembered by the client).
    pub fn watched_tubes(&self) -> &[String] {
        &self.watched
    }

    /// Opens a new connection and restores the used and watched tubes on it.
    async fn reconnect(&mut self) -> Result<()> {
        self.conn = None;
        self.in_flight = false;
        let limit = self.config.connect_timeout;
        let conn = tokio::time::timeout(limit, self.open())
            .await
            .map_err(|_| Error::Timeout(limit))??;
        self.conn = Some(conn);
        Ok(())
    }

    async fn open(&self) -> Result<Connection<TcpStream>> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Connection::new(stream, self.config.max_reply_line, self.config.max_body);
        if self.used != DEFAULT_TUBE {
            expect(
                "use",
                conn.request(&Command::Use(&self.used), None).await?,
                |r| matches!(r, Reply::Using(_)).then_some(()),
            )?;
        }
        // Watch the others first: beanstalkd refuses to ignore the last watched tube.
        for tube in self.watched.iter().filter(|t| *t != DEFAULT_TUBE) {
            expect(
                "watch",
                conn.request(&Command::Watch(tube), None).await?,
                |r| matches!(r, Reply::Watching(_)).then_some(()),
            )?;
        }
        if !self.watched.iter().any(|t| t == DEFAULT_TUBE) {
            expect(
                "ignore",
                conn.request(&Command::Ignore(DEFAULT_TUBE), None).await?,
                |r| matches!(r, Reply::Watching(_)).then_some(()),
            )?;
        }
        tracing::debug!(addr = %self.addr, used = %self.used, watched = ?self.watched, "connected to beanstalkd");
        Ok(conn)
    }

    /// Sends one command and returns its reply, turning error replies into `Err`.
    /// `timeout`: `None` waits forever.
    async fn call(
        &mut self,
        cmd: Command<'_>,
        body: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Reply> {
        let healthy = !self.in_flight && self.conn.as_ref().is_some_and(|c| c.looks_alive());
        if !healthy {
            if self.conn.is_some() {
                tracing::debug!(addr = %self.addr, cancelled = self.in_flight, "beanstalkd connection closed or out of step; reconnecting");
            }
            self.reconnect().await?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::Protocol("no connection after reconnect".into()));
        };
        self.in_flight = true;
        let result = match timeout {
            Some(limit) => tokio::time::timeout(limit, conn.request(&cmd, body))
                .await
                .unwrap_or(Err(Error::Timeout(limit))),
            None => conn.request(&cmd, body).await,
        };
        self.in_flight = false;
        let result = match result {
            Ok(Reply::Failure(f)) => Err(Error::from(f)),
            other => other,
        };
        if let Err(e) = &result {
            if e.is_connection_error() {
                tracing::warn!(addr = %self.addr, command = cmd.name(), error = %e, "dropping beanstalkd connection");
                self.conn = None;
            }
        }
        result
    }

    /// Sends `cmds` in one write and returns their replies in order, error replies included
    /// (each caller decides what a failure means for its command), with the configured I/O
    /// timeout for the whole exchange. A connection error spoils all of them, as in `call`.
    async fn call_many(&mut self, cmds: &[Command<'_>]) -> Result<Vec<Reply>> {
        let healthy = !self.in_flight && self.conn.as_ref().is_some_and(|c| c.looks_alive());
        if !healthy {
            self.reconnect().await?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::Protocol("no connection after reconnect".into()));
        };
        self.in_flight = true;
        let result = match self.config.io_timeout {
            Some(limit) => tokio::time::timeout(limit, conn.pipeline(cmds))
                .await
                .unwrap_or(Err(Error::Timeout(limit))),
            None => conn.pipeline(cmds).await,
        };
        self.in_flight = false;
        // A reply that means the server lost track of the commands (`BAD_FORMAT`,
        // `UNKNOWN_COMMAND`, `EXPECTED_CRLF`) spoils the connection, as in `call`.
        let result = result.and_then(|replies| {
            match replies.iter().find_map(|r| match r {
                Reply::Failure(f) if Error::from(*f).is_connection_error() => Some(*f),
                _ => None,
            }) {
                Some(f) => Err(Error::from(f)),
                None => Ok(replies),
            }
        });
        if let Err(e) = &result {
            if e.is_connection_error() {
                let command = cmds.first().map_or("-", |c| c.name());
                tracing::warn!(addr = %self.addr, command, count = cmds.len(), error = %e, "dropping beanstalkd connection");
                self.conn = None;
            }
        }
        result
    }

    /// A non-reserve command with the configured I/O timeout, mapped through `want`.
    async fn simple<T>(
        &mut self,
        cmd: Command<'_>,
        body: Option<&[u8]>,
        want: impl FnOnce(Reply) -> Option<T>,
    ) -> Result<T> {
        let name = cmd.name();
        let reply = self.call(cmd, body, self.config.io_timeout).await?;
        self.expect(name, reply, want)
    }

    /// Maps a reply; an unexpected one is a protocol error and drops the connection.
    fn expect<T>(
        &mut self,
        name: &str,
        reply: Reply,
        want: impl FnOnce(Reply) -> Option<T>,
    ) -> Result<T> {
        let result = expect(name, reply, want);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// `put`: queues `body` in the used tube and returns the new job's id. `delay` and `ttr`
    /// are sent in whole seconds (beanstalkd raises a TTR of 0 to 1). A `BURIED <id>` reply
    /// (server out of memory) is `Err(Error::Buried(id))`; a body over the server's `-z` is
    /// `Err(Error::JobTooBig)` and the connection stays usable.
    pub async fn put(
        &mut self,
        body: &[u8],
        pri: u32,
        delay: Duration,
        ttr: Duration,
    ) -> Result<u64> {
        let cmd = Command::Put {
            pri,
            delay: secs(delay),
            ttr: secs(ttr),
            len: body.len(),
        };
        match self.call(cmd, Some(body), self.config.io_timeout).await? {
            Reply::Inserted(id) => Ok(id),
            Reply::Buried(Some(id)) => Err(Error::Buried(id)),
            other => self.expect("put", other, |_| None),
        }
    }

    /// `use`: subsequent `put`s go to `tube`.
    pub async fn use_tube(&mut self, tube: &str) -> Result<()> {
        validate_tube(tube)?;
        self.simple(Command::Use(tube), None, |r| {
            matches!(r, Reply::Using(_)).then_some(())
        })
        .await?;
        tube.clone_into(&mut self.used);
        Ok(())
    }

    /// `watch`: adds `tube` to the watch list; returns how many tubes are watched.
    pub async fn watch(&mut self, tube: &str) -> Result<u32> {
        validate_tube(tube)?;
        let n = self
            .simple(Command::Watch(tube), None, |r| match r {
                Reply::Watching(n) => Some(n),
                _ => None,
            })
            .await?;
        if !self.watched.iter().any(|t| t == tube) {
            self.watched.push(tube.to_owned());
        }
        Ok(n)
    }

    /// `ignore`: removes `tube` from the watch list; returns how many tubes are still
    /// watched. Ignoring the only watched tube is `Err(Error::NotIgnored)`.
    pub async fn ignore(&mut self, tube: &str) -> Result<u32> {
        validate_tube(tube)?;
        let n = self
            .simple(Command::Ignore(tube), None, |r| match r {
                Reply::Watching(n) => Some(n),
                _ => None,
            })
            .await?;
        self.watched.retain(|t| t != tube);
        Ok(n)
    }

    /// `reserve`: waits, without any time limit, for a job in a watched tube. A server that
    /// vanishes without closing the connection stalls this forever; long-running workers
    /// should prefer [`reserve_with_timeout`](Self::reserve_with_timeout) in a loop.
    /// `Err(Error::DeadlineSoon)` when a job this connection holds is about to time out.
    pub async fn reserve(&mut self) -> Result<Job> {
        let reply = self.call(Command::Reserve, None, None).await?;
        self.expect("reserve", reply, reserved)
    }

    /// `reserve-with-timeout`: like [`reserve`](Self::reserve) but gives up with
    /// `Err(Error::TimedOut)` after `timeout` (whole seconds; zero polls).
    pub async fn reserve_with_timeout(&mut self, timeout: Duration) -> Result<Job> {
        let secs = secs(timeout);
        let limit = self
            .config
            .io_timeout
            .map(|io| io + Duration::from_secs(secs.into()));
        let reply = self
            .call(Command::ReserveWithTimeout(secs), None, limit)
            .await?;
        self.expect("reserve-with-timeout", reply, reserved)
    }

    /// Takes up to `max` jobs that are ready now, in one round trip: `max` pipelined
    /// `reserve-with-timeout 0` commands (each answers a job, or `TIMED_OUT` once the watched
    /// tubes are empty). For a consumer that drains many small jobs, such as the ledger
    /// writer, this replaces a round trip per job. [`Ready::deadline_soon`] tells that
    /// beanstalkd answered `DEADLINE_SOON` to one of them: a job this connection holds is
    /// about to time out.
    /// At most [`MAX_PIPELINE`] are asked for in one call.
    pub async fn reserve_ready(&mut self, max: usize) -> Result<Ready> {
        let cmds = vec![Command::ReserveWithTimeout(0); max.min(MAX_PIPELINE)];
        let mut ready = Ready::default();
        for reply in self.call_many(&cmds).await? {
            match reply {
                Reply::Reserved(job) => ready.jobs.push(job),
                Reply::Failure(Failure::TimedOut) => {}
                Reply::Failure(Failure::DeadlineSoon) => ready.deadline_soon = true,
                other => {
                    // The jobs reserved so far go back to the ready queue with the
                    // connection, instead of waiting out their time-to-run.
                    self.conn = None;
                    return match other {
                        Reply::Failure(f) => Err(Error::from(f)),
                        other => expect("reserve-with-timeout", other, |_| None),
                    };
                }
            }
        }
        Ok(ready)
    }

    /// `reserve-job`: reserves the job `id` whatever its state (`NOT_FOUND` if it does not
    /// exist or is reserved by someone else).
    pub async fn reserve_job(&mut self, id: u64) -> Result<Job> {
        self.simple(Command::ReserveJob(id), None, reserved).await
    }

    /// `delete`: removes a job (reserved by this connection, or ready/delayed/buried).
    pub async fn delete(&mut self, id: u64) -> Result<()> {
        self.simple(Command::Delete(id), None, |r| {
            (r == Reply::Deleted).then_some(())
        })
        .await
    }

    /// `delete` of every id in `ids`, pipelined in one round trip: one result per id, in
    /// order (`Err(Error::NotFound)` for a job that is gone or reserved by another
    /// connection). The outer `Err` is a connection error: then none is known to be deleted.
    /// Sent [`MAX_PIPELINE`] at a time.
    pub async fn delete_all(&mut self, ids: &[u64]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PIPELINE) {
            let cmds: Vec<Command<'_>> = chunk.iter().map(|&id| Command::Delete(id)).collect();
            for reply in self.call_many(&cmds).await? {
                out.push(match reply {
                    Reply::Deleted => Ok(()),
                    Reply::Failure(f) => Err(Error::from(f)),
                    other => return self.expect("delete", other, |_| None),
                });
            }
        }
        Ok(out)
    }

    /// `release`: puts a job reserved by this connection back, ready after `delay`.
    pub async fn release(&mut self, id: u64, pri: u32, delay: Duration) -> Result<()> {
        let cmd = Command::Release {
            id,
            pri,
            delay: secs(delay),
        };
        // `BURIED` here: the server could not grow the ready queue and buried the job.
        self.simple(cmd, None, |r| match r {
            Reply::Released => Some(Ok(())),
            Reply::Buried(None) => Some(Err(Error::Buried(id))),
            _ => None,
        })
        .await?
    }

    /// `bury`: parks a job reserved by this connection in the buried list.
    pub async fn bury(&mut self, id: u64, pri: u32) -> Result<()> {
        self.simple(Command::Bury { id, pri }, None, |r| {
            (r == Reply::Buried(None)).then_some(())
        })
        .await
    }

    /// `touch`: restarts the TTR of a job reserved by this connection.
    pub async fn touch(&mut self, id: u64) -> Result<()> {
        self.simple(Command::Touch(id), None, |r| {
            (r == Reply::Touched).then_some(())
        })
        .await
    }

    /// `kick`: moves up to `bound` buried jobs (or, if none are buried, delayed jobs) of the
    /// used tube to ready; returns how many.
    pub async fn kick(&mut self, bound: u64) -> Result<u64> {
        self.simple(Command::Kick(bound), None, |r| match r {
            Reply::Kicked(Some(n)) => Some(n),
            _ => None,
        })
        .await
    }

    /// `kick-job`: moves one buried or delayed job to ready.
    pub async fn kick_job(&mut self, id: u64) -> Result<()> {
        self.simple(Command::KickJob(id), None, |r| {
            (r == Reply::Kicked(None)).then_some(())
        })
        .await
    }

    /// `peek`: the job `id`, in any state. Missing jobs are `Err(Error::NotFound)`; so are
    /// the `peek-*` variants' empty lists.
    pub async fn peek(&mut self, id: u64) -> Result<Job> {
        self.simple(Command::Peek(id), None, found).await
    }

    /// `peek-ready`: the next ready job of the used tube.
    pub async fn peek_ready(&mut self) -> Result<Job> {
        self.simple(Command::PeekReady, None, found).await
    }

    /// `peek-delayed`: the delayed job of the used tube that becomes ready first.
    pub async fn peek_delayed(&mut self) -> Result<Job> {
        self.simple(Command::PeekDelayed, None, found).await
    }

    /// `peek-buried`: the next buried job of the used tube.
    pub async fn peek_buried(&mut self) -> Result<Job> {
        self.simple(Command::PeekBuried, None, found).await
    }

    /// `stats`: server-wide statistics.
    pub async fn stats(&mut self) -> Result<Stats> {
        let body = self.simple(Command::Stats, None, ok_body).await?;
        self.parsed(Stats::parse(&body))
    }

    /// `stats-tube`: one tube's statistics (`NOT_FOUND` if the tube does not exist).
    pub async fn stats_tube(&mut self, tube: &str) -> Result<Stats> {
        validate_tube(tube)?;
        let body = self.simple(Command::StatsTube(tube), None, ok_body).await?;
        self.parsed(Stats::parse(&body))
    }

    /// `stats-job`: one job's statistics.
    pub async fn stats_job(&mut self, id: u64) -> Result<Stats> {
        let body = self.simple(Command::StatsJob(id), None, ok_body).await?;
        self.parsed(Stats::parse(&body))
    }

    /// `list-tubes`: every existing tube.
    pub async fn list_tubes(&mut self) -> Result<Vec<String>> {
        let body = self.simple(Command::ListTubes, None, ok_body).await?;
        self.parsed(parse_list(&body))
    }

    /// `list-tubes-watched`, as the server sees it.
    pub async fn list_tubes_watched(&mut self) -> Result<Vec<String>> {
        let body = self
            .simple(Command::ListTubesWatched, None, ok_body)
            .await?;
        self.parsed(parse_list(&body))
    }

    /// `list-tube-used`, as the server sees it.
    pub async fn list_tube_used(&mut self) -> Result<String> {
        self.simple(Command::ListTubeUsed, None, |r| match r {
            Reply::Using(t) => Some(t),
            _ => None,
        })
        .await
    }

    /// `pause-tube`: no job is reserved from `tube` for `delay`.
    pub async fn pause_tube(&mut self, tube: &str, delay: Duration) -> Result<()> {
        validate_tube(tube)?;
        let cmd = Command::PauseTube {
            tube,
            delay: secs(delay),
        };
        self.simple(cmd, None, |r| (r == Reply::Paused).then_some(()))
            .await
    }

    /// A YAML body that does not parse means the server is not what we think: drop it.
    fn parsed<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

fn expect<T>(name: &str, reply: Reply, want: impl FnOnce(Reply) -> Option<T>) -> Result<T> {
    let kind = reply.name();
    want(reply).ok_or_else(|| Error::Protocol(format!("unexpected reply {kind} to {name}")))
}

fn reserved(r: Reply) -> Option<Job> {
    match r {
        Reply::Reserved(job) => Some(job),
        _ => None,
    }
}

fn found(r: Reply) -> Option<Job> {
    match r {
        Reply::Found(job) => Some(job),
        _ => None,
    }
}

fn ok_body(r: Reply) -> Option<bytes::Bytes> {
    match r {
        Reply::Ok(body) => Some(body),
        _ => None,
    }
}
