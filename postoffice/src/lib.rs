//! The post office: HTTP intake of the hedwig wire protocol into beanstalkd.
//!
//! Layout:
//! - [`config`]: the one config struct and its validation.
//! - [`app`]: the axum router (`POST /`, `POST /check`, `POST /status`, `GET /health`,
//!   `GET /metrics`).
//! - [`intake`]: the submission handler: key check, envelope syntax, size, policy, enqueue.
//! - [`lanes`]: which lane a message goes to (header, app, sender domain, host, default)
//!   and its beanstalkd priority with the per-host fairness offset.
//! - [`server`]: the connection layer: header and idle timeouts, connection caps, the
//!   descriptor limit.
//! - [`body`]: bounded, timed body reading under byte budgets.
//! - [`policy`]: revocation, allowed sender domains, per-host rate limits.
//! - [`from_policy`]: the From: field against the host's domains; what may be DKIM-signed.
//! - [`dedupe`]: the duplicate message-id window (in this process; shared with the other post
//!   offices through the ledger store with `ledger.shared_dedupe`, see [`ledger::claims`]).
//! - [`metrics`]: Prometheus counters (registry, draining flag, signals and the health-check
//!   client are the shared shell, `hedwig_service`).
//! - [`queue`]: the beanstalkd servers: choice by sending host, failover, start-up check.
//!   The queue schema (tube names, job format, hold list, failed-tube scan) is the
//!   `hedwig-queue` crate's.
//! - [`ledger`]: the delivery ledger here: its settings, the writer with the pruner and the
//!   stuck check (`ledger.writer`), the admin API (`ledger.api_listen`), `trace` and `stuck`.
//! - [`status`]: `POST /status`, a sending host's signed question about one of its own
//!   messages, answered from the ledger.
//! - [`suppression`]: the suppression list here: its settings, intake's in-memory set and
//!   its refresh, `postoffice suppress`, `/api/v1/suppressions`.
//! - [`webhooks`]: signed webhooks: the `webhooks:` settings, the dispatcher of the
//!   outbox the ledger writer fills, `postoffice webhooks` and its admin API routes.
//! - [`bounce`]: the bounce listener: inbound SMTP for the VERP bounce domains, turning DSNs
//!   and ARF reports into `bounced` / `complained` ledger events (`bounce_listener`).
//! - [`console`]: the operator console, web pages on the admin listener (`console:`).
//! - [`admin`]: the queue administration subcommands (`stats`, `failed`, `requeue`, `show`,
//!   `purge`, `hold`, `release`).
//!
//! [`serve`] runs the server until the shutdown token is cancelled, then finishes in-flight
//! requests.

pub mod admin;
pub mod app;
pub mod body;
pub mod bounce;
pub mod config;
pub mod console;
pub mod dedupe;
pub mod error;
pub mod from_policy;
pub mod intake;
pub mod lanes;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod queue;
pub mod server;
pub mod state;
pub mod status;
pub mod suppression;
pub mod tls;
pub mod unsubscribe;
pub mod webhooks;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Why the post office could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    #[error(transparent)]
    Queue(#[from] queue::QueueCheckError),
    #[error("cannot serve HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Validates the config, checks beanstalkd, and serves on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let settings = config.check().map_err(StartError::Config)?;
    for warning in settings.config.renamed_keys() {
        tracing::warn!("{warning}");
    }
    from_policy::warn_unsigned_hosts(&settings.config);
    let max_job_size = queue::wait_and_check(&settings).await?;
    let queue = queue::Queue::new(&settings)?;
    let config::Settings {
        config,
        secrets,
        servers,
        tubes,
        ledger,
        bounce,
        unsubscribe,
    } = settings;
    let mut state = state::AppState::new(config, secrets, tubes.clone(), queue, &ledger);
    state.unsubscribe = unsubscribe;
    if ledger.suppression.intake {
        state.suppressions = Some(Arc::new(suppression::SuppressionSet::new()));
    }
    let state = Arc::new(state);
    start_ledger(&ledger, &state, &servers, &tubes, &shutdown).await?;
    if let (Some(bounce), Some(events)) = (bounce, state.events.clone()) {
        let tls = match &bounce.tls {
            Some(settings) => {
                let (config, reloader) = tls::server_config(settings, &[])
                    .map_err(|e| StartError::Config(vec![format!("bounce_listener.tls: {e}")]))?;
                tokio::spawn(tls::watch(reloader, shutdown.clone()));
                Some(config)
            }
            None => None,
        };
        let listener = TcpListener::bind(bounce.listen).await?;
        tracing::info!(
            listen = %listener.local_addr()?, domains = %bounce.domains.join(","),
            starttls = tls.is_some(), min_data_rate = bounce.min_data_rate,
            "bounce listener started"
        );
        let shared = Arc::new(bounce::listener::Listener::new(
            bounce,
            events,
            servers.clone(),
            state.metrics.bounce.clone(),
            tls,
        ));
        tokio::spawn(bounce::listener::run(
            shared,
            listener,
            tokio_util::task::TaskTracker::new(),
            shutdown.clone(),
        ));
    }
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %addr, tls = state.config.tls.is_some(), beanstalkd = %servers.join(","), tube_prefix = %tubes,
        max_message_size = state.config.max_message_size.0, max_job_size,
        "postoffice started"
    );
    let limits = server::Limits {
        header_timeout: state.config.header_timeout,
        idle_timeout: state.config.idle_timeout,
        max_connections: server::effective_max_connections(state.config.max_connections),
        max_connections_per_ip: state.config.max_connections_per_ip,
    };
    let router = app::app(state.clone());
    let stopping = CancellationToken::new();
    let drain = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        let stopping = stopping.clone();
        async move {
            shutdown.cancelled().await;
            state.shell.start_draining();
            tracing::info!("shutting down: finishing in-flight requests");
            stopping.cancel();
        }
    };
    tokio::spawn(drain);
    let tls = match &state.config.tls {
        Some(settings) => {
            let (acceptor, reloader) = tls::acceptor(settings)
                .map_err(|e| StartError::Config(vec![format!("tls: {e}")]))?;
            tokio::spawn(tls::watch(reloader, stopping.clone()));
            Some(acceptor)
        }
        None => None,
    };
    let registry = Arc::new(server::Registry::new(state.metrics.connections.clone()));
    let server = server::run(listener, router, limits, tls, registry, stopping);
    let grace = state.config.shutdown_timeout;
    tokio::select! {
        () = server => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("in-flight requests did not finish within {grace:?}; exiting");
        }
    }
    tracing::info!("postoffice stopped");
    Ok(())
}

/// Connections the admin API keeps open at once, and from one address.
const API_MAX_CONNECTIONS: usize = 64;
const API_MAX_CONNECTIONS_PER_IP: usize = 16;

/// Starts what `ledger:` asks for: the writer (with pruner and stuck check), the admin API
/// on its own listener, the pruner of the shared duplicate-id window. None waits for the
/// store: a store that is down is opened later, and intake never depends on it.
async fn start_ledger(
    settings: &ledger::LedgerSettings,
    state: &Arc<state::AppState>,
    servers: &[String],
    tubes: &hedwig_queue::Tubes,
    shutdown: &CancellationToken,
) -> Result<(), StartError> {
    if let Some(shared) = state.dedupe.shared() {
        tracing::info!(
            claimer = shared.claimer(),
            timeout_ms = settings.shared_dedupe_timeout.as_millis() as u64,
            "shared duplicate-id window in the ledger store"
        );
        tokio::spawn(shared.clone().run(shutdown.clone()));
    }
    // Intake's suppression list needs a store (checked at start), so `state.ledger` is there
    // whenever `state.suppressions` is.
    let Some(handle) = state.ledger.clone() else {
        return Ok(());
    };
    if let Some(set) = state.suppressions.clone() {
        // Loaded before the first post when the store answers within a few seconds; else
        // intake starts with an empty list and the refresh task says why.
        let mut truncated = false;
        let first = suppression::reload(
            &handle,
            &set,
            settings.suppression.max_entries,
            &mut truncated,
        );
        if let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_secs(5), first).await {
            tracing::info!(entries = set.len(), "suppression list loaded");
        }
        tokio::spawn(suppression::run_refresh(
            handle.clone(),
            set,
            settings.suppression.clone(),
            state.metrics.suppression_entries.clone(),
            shutdown.clone(),
        ));
    }
    if settings.writer {
        tokio::spawn(ledger::run_writer(
            settings.clone(),
            handle.clone(),
            servers.to_vec(),
            tubes.clone(),
            state.metrics.ledger.clone(),
            shutdown.clone(),
        ));
    }
    if let (Some(addr), Some(token)) = (settings.api_listen, settings.token.as_deref()) {
        let listener = TcpListener::bind(addr).await?;
        let mut api = ledger::api::router(Arc::new(ledger::api::ApiState::new(
            handle.clone(),
            settings.stuck_after,
            token,
        )));
        if let Some(console) = &settings.console {
            let target = admin::Target::new(&state.config, &[])
                .map_err(|e| StartError::Config(vec![e.to_string()]))?;
            let console = console::Console::new(
                console.clone(),
                handle,
                target,
                settings.stuck_after,
                state.config.revoked.clone(),
                settings.webhooks.iter().map(|e| e.name.clone()).collect(),
                token,
            );
            // Its own routes (and login) next to the API's; the API's token check stays on
            // the API's routes only.
            api = console::router(Arc::new(console)).merge(api);
            tracing::info!(
                users = settings.console.as_ref().map_or(0, |c| c.users.len()),
                "operator console on the admin listener at /console/"
            );
        }
        tracing::info!(listen = %listener.local_addr()?, "ledger API started");
        // The intake's connection handling (header and idle timeouts, connection caps), with
        // caps sized for a few operators and scripts rather than a fleet.
        let limits = server::Limits {
            header_timeout: state.config.header_timeout,
            idle_timeout: state.config.idle_timeout,
            max_connections: API_MAX_CONNECTIONS,
            max_connections_per_ip: API_MAX_CONNECTIONS_PER_IP,
        };
        let registry = Arc::new(server::Registry::new(state.metrics.api_connections.clone()));
        tokio::spawn(server::run(
            listener,
            api,
            limits,
            None,
            registry,
            shutdown.clone(),
        ));
    }
    Ok(())
}
