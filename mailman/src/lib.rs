//! mailman: the edge SMTP listener that spools every message to disk and forwards it to the
//! postoffice over HTTP.
//!
//! Layout:
//! - [`smtp`]: the SMTP session state machine, DATA receiver and replies; no I/O.
//! - [`server`]: the tokio listener: which clients are welcome, the client's app, and mailman's
//!   side of a session.
//! - [`accept`]: the accept loop and its connection caps (in all, per client address), shared
//!   with the post office's bounce listener.
//! - [`drive`]: the I/O loop of an SMTP session (deadlines, `min_data_rate`, STARTTLS), shared
//!   with the post office's bounce listener.
//! - [`auth`]: SMTP AUTH's credentials file, password checks and the slowing of guessers.
//! - [`handoff`]: after the final `.`: spool, post while the client waits, pick the reply
//!   (the hand-off to the postoffice; delivery to the recipients is the worker's).
//! - [`fixup`]: header fix-ups (`Date:`, `Message-ID:`, `From:`, `To:`, no `Bcc:`) and header
//!   refusals before a message is spooled.
//! - [`spool`]: the on-disk spool with group commit of fsyncs.
//! - [`post`]: the HTTP post to the postoffice, failover, and what each answer means.
//! - [`retry`]: the background retries of spooled messages with backoff, across restarts.
//! - [`http`]: what `/health` says and `GET /status/<id>` (the listener and `/metrics` are
//!   `hedwig_service::ops`).
//! - [`queue`]: `mailman queue`: the spool's messages and why they wait, read from disk.
//! - [`status`]: asking the post office for one of this host's messages' timeline.
//! - [`docker`]: the client address on a Docker network mapped to its container (name, image,
//!   compose labels, `hedwig.*` policy labels) through the Engine API; off without
//!   `docker.socket`.
//! - [`metrics`], [`config`], [`tls`].
//!
//! [`start`] binds everything and returns the bound addresses; [`Running::wait`] returns after
//! the shutdown token is cancelled and sessions have finished (or `shutdown_timeout` passed).

pub mod accept;
pub mod auth;
pub mod bounce;
pub mod config;
pub mod docker;
pub mod drive;
pub mod encoding;
pub mod fixup;
pub mod handoff;
pub mod http;
pub mod metrics;
pub mod post;
pub mod queue;
pub mod retry;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod status;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, Settings};

/// Why mailman could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A started mailman.
pub struct Running {
    /// The SMTP listen addresses, as bound (port 0 resolved).
    pub smtp_addrs: Vec<SocketAddr>,
    /// The `/health` + `/metrics` address, as bound.
    pub http_addr: Option<SocketAddr>,
    /// Shared state (metrics, spool), for tests and the binary.
    pub core: Arc<handoff::Core>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until shutdown has finished.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Opens the spool, binds the listeners and starts serving. Returns once everything listens.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> Result<Running, Error> {
    let (spool, left) = spool::Spool::open(&settings.spool_dir, settings.spool_max)?;
    let poster = post::Poster::new(
        settings.postoffice.clone(),
        settings.fqdn.clone(),
        settings.key.clone(),
        settings.sign_posts,
        &settings.postoffice_roots,
        settings.forward_deadline.min(Duration::from_secs(10)),
    )?;
    let mut listeners = Vec::new();
    for addr in &settings.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
        listeners.push(l);
    }
    let http_listener = match settings.http_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?,
        ),
        None => None,
    };
    let smtp_addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());

    let (retry_tx, retry_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let background = CancellationToken::new();
    let docker = match &settings.docker {
        None => None,
        Some(d) => {
            match docker::Resolver::start(d.clone(), metrics.docker.clone(), background.clone())
                .await
            {
                Ok(resolver) => {
                    tracing::info!(socket = %d.socket.display(), containers = resolver.len(),
                        "docker: clients on Docker networks are known by their container");
                    Some(resolver)
                }
                Err(err) => {
                    // A bad path is a config error in substance, but mail must flow: known
                    // by address, as without the setting.
                    metrics.docker.api_errors.inc();
                    tracing::error!(%err, "docker: cannot use the socket; clients are known by address");
                    None
                }
            }
        }
    };
    let core = Arc::new(handoff::Core {
        settings,
        spool,
        poster,
        metrics,
        shell: Arc::new(hedwig_service::ops::Shell::new(registry)),
        retry: retry_tx,
        postoffice_up: tokio::sync::Notify::new(),
        docker,
    });
    let waiting = Arc::new(retry::Waiting::default());
    let retries = tokio::spawn(retry::run(
        core.clone(),
        waiting.clone(),
        left,
        retry_rx,
        background.clone(),
    ));
    {
        let core = core.clone();
        let stop = background.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = check_key_every_interval(&core) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    let http_task = http_listener.map(|l| {
        let state = http::HttpState {
            core: core.clone(),
            waiting,
            status_slots: Arc::new(Semaphore::new(http::STATUS_CONCURRENT)),
        };
        let before_scrape = {
            let state = state.clone();
            move || state.set_spool_gauges()
        };
        hedwig_service::ops::serve(
            l,
            http::app(state),
            core.shell.clone(),
            before_scrape,
            background.clone(),
        )
    });
    let tracker = TaskTracker::new();
    let caps = accept::Caps::new(
        core.settings.max_connections,
        core.settings.max_connections_per_client,
    );
    let mut accepts = Vec::new();
    for l in listeners {
        accepts.push(tokio::spawn(server::accept_loop(
            core.clone(),
            l,
            caps.clone(),
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    tracing::info!(
        listen = ?smtp_addrs,
        http = ?http_addr,
        postoffice = ?core.settings.postoffice.iter().map(config::redact_url).collect::<Vec<_>>(),
        fqdn = %core.settings.fqdn,
        "mailman started"
    );
    let done = {
        let core = core.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            core.shell.start_draining();
            tracing::info!("shutting down: no new connections, finishing open sessions");
            for a in accepts {
                let _ = a.await;
            }
            tracker.close();
            if tokio::time::timeout(core.settings.shutdown_timeout, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("sessions still open after shutdown_timeout; closing them");
            }
            background.cancel();
            let _ = retries.await;
            if let Some(h) = http_task {
                let _ = h.await;
            }
            tracing::info!(
                spooled_bytes = core.spool.used(),
                "mailman stopped; spooled messages stay for the next start"
            );
        })
    };
    Ok(Running {
        smtp_addrs,
        http_addr,
        core,
        done,
    })
}

/// Starts mailman and runs until `shutdown` is cancelled and everything has stopped.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), Error> {
    start(settings, shutdown).await?.wait().await;
    Ok(())
}

/// Checks the key at start and then every `key_check_interval`, so that `/health` turns
/// unhealthy while the postoffice refuses it (even with no mail to send) and healthy again as
/// soon as it accepts it (issue 11 F14).
async fn check_key_every_interval(core: &handoff::Core) {
    let interval = core.settings.key_check_interval;
    let mut first = true;
    loop {
        match core
            .poster
            .check_key(interval.min(Duration::from_secs(10)))
            .await
        {
            Ok(true) => {
                if first {
                    tracing::info!("postoffice accepts our key");
                }
                handoff::key_accepted(core);
            }
            Ok(false) => {
                handoff::key_refused(core, "the postoffice REFUSES our key (401): fix fqdn/key")
            }
            Err(why) if first => {
                tracing::warn!(%why, "cannot check the key against the postoffice now")
            }
            Err(why) => tracing::debug!(%why, "cannot check the key against the postoffice now"),
        }
        first = false;
        tokio::time::sleep(interval).await;
    }
}
