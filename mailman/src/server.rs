//! The SMTP listener: accepts connections, checks the client's network and the connection
//! limits (all clients, and per client address), and runs each session over a stream with
//! deadlines on every read and write.
//!
//! Deadlines (issue 11 F5: a client must not hold a slot by dribbling): `command_timeout`
//! per command line, `data_timeout` and `min_data_rate` in DATA, `session_timeout`; applied
//! by the I/O loop both SMTP listeners share, [`crate::drive`].
//!
//! A client address over `max_connections_per_client` gets `421 4.7.0` before it can take one
//! of the `max_connections` slots, so it cannot lock its neighbours out; the loop and the caps
//! are [`crate::accept`]'s, shared with the post office's bounce listener.
//!
//! The session logic is [`crate::smtp::Session`], the I/O loop [`crate::drive`]; this module
//! hands finished messages to [`crate::handoff`] and SMTP AUTH credentials to
//! [`crate::auth`]. On shutdown, a session waiting for a command gets `421` and is closed; one
//! in the middle of DATA may finish (bounded by `shutdown_timeout` in
//! [`crate::Running::wait`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{Caps, Gate, Refused};
use crate::drive::{drive, Bounds};
pub use crate::drive::{SessionEnd, Stream};
use crate::handoff::{hand_off, Core};
use crate::smtp::{reply, AppPolicy, RateCheck, Session, SessionConfig};
use tracing::Instrument;

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

/// mailman's side of the shared accept loop ([`crate::accept`]): clients outside
/// `allowed_networks` get `554`, refusals are logged and counted, sessions are counted.
struct Listener {
    core: Arc<Core>,
    config: Arc<SessionConfig>,
    per_client_limit: usize,
}

impl Gate for Listener {
    fn name(&self) -> &'static str {
        "SMTP listener"
    }

    fn welcome(&self, peer: SocketAddr) -> bool {
        self.core.settings.allowed(peer.ip())
    }

    fn refused(&self, peer: SocketAddr, why: Refused) -> reply::Reply {
        let (core, fqdn) = (&self.core, &self.core.settings.fqdn);
        match why {
            Refused::Unwelcome => {
                core.metrics.connections_denied.inc();
                tracing::warn!(client = %peer, "connection from a client outside allowed_networks refused");
                reply::access_denied(fqdn)
            }
            Refused::PerClient => {
                core.metrics.connections_over_client_limit.inc();
                tracing::warn!(client = %peer, limit = self.per_client_limit, "max_connections_per_client reached, connection refused");
                reply::too_many_from_client(fqdn)
            }
            Refused::Full => {
                core.metrics.connections_over_limit.inc();
                tracing::warn!(client = %peer, "max_connections reached, connection refused");
                reply::too_many_connections(fqdn)
            }
        }
    }

    async fn serve(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let core = &self.core;
        core.metrics.connections_total.inc();
        core.metrics.connections_open.inc();
        let result = serve(core, &self.config, Box::new(socket), peer, &shutdown).await;
        core.metrics.connections_open.dec();
        if let Err(why) = result {
            tracing::debug!(client = %peer, %why, "session ended");
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, under `caps` (shared by every SMTP
/// listener of this mailman).
pub async fn accept_loop(
    core: Arc<Core>,
    listener: TcpListener,
    caps: Caps,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let gate = Arc::new(Listener {
        config: Arc::new(session_config(&core)),
        per_client_limit: caps.per_client.limit(),
        core,
    });
    crate::accept::accept_loop(gate, listener, caps, tracker, shutdown).await
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

/// mailman's side of the shared I/O loop ([`crate::drive`]): messages go to the post office
/// (or the spool), credentials to SMTP AUTH, policy refusals are logged and counted.
struct Mailman<'a> {
    core: &'a Arc<Core>,
}

impl crate::drive::Handler for Mailman<'_> {
    async fn message(&self, message: crate::smtp::Message) -> reply::Reply {
        hand_off(self.core, message).await
    }

    async fn authenticate(
        &self,
        client: IpAddr,
        credentials: crate::smtp::Credentials,
    ) -> crate::smtp::AuthOutcome {
        // argon2, then the delay a failure earns; its time is bounded by the failure delay's
        // cap.
        let outcome = match &self.core.settings.auth {
            Some(auth) => auth.check(client, credentials).await,
            None => crate::smtp::AuthOutcome::Unavailable,
        };
        self.core.metrics.auth_checked(&outcome);
        outcome
    }

    fn replying(&self, session: &mut Session, peer: SocketAddr) {
        if let Some(refusal) = session.take_policy_refusal() {
            self.core.metrics.app_policy_refused.inc();
            tracing::info!(client = %peer, reply = %refusal, "refused for the app's label policy");
        }
    }
}

/// The session bounds from the settings.
pub fn bounds(core: &Core) -> Bounds {
    let settings = &core.settings;
    Bounds {
        hostname: settings.fqdn.clone(),
        command_timeout: settings.command_timeout,
        data_timeout: settings.data_timeout,
        min_data_rate: settings.min_data_rate,
        session_timeout: settings.session_timeout,
        tls: settings.tls.clone(),
    }
}

async fn run_session(
    core: &Arc<Core>,
    session: Session,
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let result = drive(
        &Mailman { core },
        &bounds(core),
        session,
        stream,
        peer,
        shutdown,
    )
    .await;
    if matches!(&result, Err(end) if end.is_cut()) {
        core.metrics.sessions_timed_out.inc();
    }
    result
}
