//! The hedwig delivery worker: takes jobs from beanstalkd and delivers them to the
//! recipients' mail servers.
//!
//! Layout:
//! - [`config`]: the config struct, defaults, and `check() -> Settings` (parsed once at start).
//! - [`policy`]: the delivery policy sections of the config (SMTP timeouts, TLS mode, caps
//!   per destination), apart so the SMTP session and the destination pool need no config.
//! - [`plan`]: what becomes of a job after an attempt (retry with backoff, failed record,
//!   bounce): pure decisions, no I/O.
//! - [`lanes`]: each lane's retry schedule, lifetime and retry priority; a job's lane.
//! - [`bounce_limit`]: at most so many bounces per envelope sender per interval.
//! - [`error`]: every delivery failure, and the one `is_permanent` classification.
//! - [`hops`]: mail loop detection (counting `Received:` fields).
//! - [`route`]: the routing table (capture, transports, relayhost), nexthops, and MX
//!   resolution with hickory.
//! - [`smtp`]: the SMTP client: reply parsing, the session over any stream, STARTTLS, AUTH.
//! - [`login`]: smarthost credentials (relayhost, transports), loaded and checked at start.
//! - [`mta_sts`]: MTA-STS (RFC 8461) policies of recipient domains: TXT, HTTPS fetch, cache
//!   (persisted); [`deliver`] applies them to MX hosts and TLS.
//! - [`tls_rpt`]: TLS-RPT (RFC 8460): counts of the MTA-STS checks per domain and day, and
//!   the daily reports (https POST, or a message through the worker's own queue).
//! - [`deliver`]: one message to one domain: hosts, addresses, sessions, per-recipient outcomes.
//! - [`pools`]: IP pools: the local address and EHLO name per group of sending hosts.
//! - [`destination`]: per-destination caps, slow-down after 421, idle connections for reuse.
//! - [`capture`]: the Maildir "transport" for staging.
//! - [`attempt`]: one delivery attempt of a whole job: loop check, line fixing, DKIM signing,
//!   recipients grouped by domain, domains in parallel (one transaction per recipient when
//!   its sender domain uses [`verp`]).
//! - [`verp`]: VERP return paths per sender domain (`bounces+<token>@<bounce domain>`).
//! - [`unsubscribe`]: RFC 8058 one-click unsubscribe links for bulk hosts' mail.
//! - [`ledger`]: the delivery ledger's events of an attempt, a bounce, a held job.
//! - [`queue`]: the beanstalkd loop: reserve, touch, record, emit the ledger's events, delete. The queue
//!   schema (tube names, job format, hold list) is the `hedwig-queue` crate's.
//! - [`metrics`]: what `/metrics` counts; [`http`]: what `/health` says (the listener is
//!   `hedwig_service::ops`).
//!
//! [`run`] starts it all in-process (the binary and the end-to-end tests use it); [`check`]
//! is `worker check-config`.

pub mod attempt;
pub mod bounce_limit;
pub mod capture;
pub mod config;
pub mod deliver;
pub mod destination;
pub mod error;
pub mod hops;
pub mod http;
pub mod lanes;
pub mod ledger;
pub mod login;
pub mod metrics;
pub mod mta_sts;
pub mod plan;
pub mod policy;
pub mod pools;
pub mod queue;
pub mod route;
pub mod smtp;
pub mod tls_rpt;
pub mod unsubscribe;
pub mod verp;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings};

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config has problems (one per line).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Dkim(#[from] hedwig_message::Error),
    #[error("http_listen {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything built from the config once, before the tasks start.
pub struct Parts {
    pub worker: Arc<queue::Worker>,
    /// The metrics registry and the draining flag `/health` reads.
    pub shell: Arc<hedwig_service::ops::Shell>,
    /// TLS-RPT counters and reporter (`tls_rpt.enabled`); [`run`] drives it.
    pub tls_rpt: Option<Arc<tls_rpt::TlsRpt>>,
}

/// Builds the resolver, TLS configs, DKIM signer and metrics from `config`.
pub fn build(config: Config) -> Result<Parts, RunError> {
    let config::Settings {
        config,
        nameservers,
        routes,
        verp,
        unsubscribe,
        pools,
    } = config
        .check()
        .map_err(|problems| RunError::Config(problems.join("\n")))?;
    for login in routes.relay_login.iter().chain(routes.logins.values()) {
        if login.allow_unverified {
            tracing::warn!(
                transport = %login.transport,
                "allow_unverified: the password for {} is sent over TLS whose certificate is NOT \
                 verified; anyone who can intercept the connection can take it. Use only for a \
                 relay on a private network",
                login.user
            );
        }
    }
    let dns_timeout = config.timeouts.connect.min(Duration::from_secs(10));
    let dns = route::Dns::new(&nameservers, dns_timeout, config.ipv6).map_err(RunError::Config)?;
    let tls =
        smtp::tls::TlsClients::new(config.tls.ca_file.as_deref()).map_err(RunError::Config)?;
    let signer = if config.dkim.keys.is_empty() {
        None
    } else {
        Some(Arc::new(hedwig_message::dkim::Signer::new(&config.dkim)?))
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(metrics::Metrics::register(
        &mut registry,
        hedwig_service::metrics::HostLabels::new(&config.metrics_hosts),
    ));
    let tubes = config.tubes().map_err(RunError::Config)?;
    let tls_rpt = if config.mta_sts.enabled && config.tls_rpt.enabled {
        Some(Arc::new(
            tls_rpt::TlsRpt::new(tls_rpt::Setup {
                config: &config.tls_rpt,
                hostname: config.ehlo_name(),
                state_dir: config.mta_sts.state_dir.as_deref(),
                ca_file: config.tls.ca_file.as_deref(),
                dns: dns.clone(),
                beanstalkd: config.beanstalkd.clone(),
                outbound_tube: tubes.outbound().to_string(),
                metrics: metrics.clone(),
                allow_private_addresses: config.mta_sts.allow_private_addresses,
                dkim_domains: config
                    .dkim
                    .keys
                    .iter()
                    .map(|k| k.domain.to_ascii_lowercase())
                    .collect(),
            })
            .map_err(RunError::Config)?,
        ))
    } else {
        None
    };
    let mta_sts = if config.mta_sts.enabled {
        Some(Arc::new(
            mta_sts::MtaSts::new(&config.mta_sts, dns.clone(), config.tls.ca_file.as_deref())
                .map_err(RunError::Config)?
                .with_reports(tls_rpt.clone(), metrics.clone()),
        ))
    } else {
        None
    };
    let config = Arc::new(config);
    let deliverer = Arc::new(deliver::Deliverer {
        dests: destination::Destinations::new(config.limits.clone()),
        config: config.clone(),
        routes,
        dns,
        tls,
        mta_sts,
        metrics: metrics.clone(),
        pools,
    });
    Ok(Parts {
        worker: Arc::new(queue::Worker {
            bounce_limiter: bounce_limit::SenderLimiter::new(
                config.bounce_limits.per_sender,
                config.bounce_limits.interval,
            ),
            events: config.events.then(|| {
                hedwig_queue::emit::Emitters::new(
                    config.beanstalkd.iter().map(String::as_str),
                    &tubes,
                )
            }),
            lanes: lanes::Lanes::new(&config),
            config,
            tubes,
            deliverer,
            signer,
            metrics,
            verp: verp.map(Arc::new),
            unsubscribe: unsubscribe.map(Arc::new),
        }),
        shell: Arc::new(hedwig_service::ops::Shell::new(registry)),
        tls_rpt,
    })
}

/// Runs the worker until `shutdown` is cancelled, then drains: stops reserving, lets
/// in-flight deliveries finish within `shutdown_grace` (or hands their jobs back), answers
/// `/health` with 503 meanwhile.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let concurrency = config.concurrency;
    let listen = config.http_listen.clone();
    let parts = build(config)?;
    let http_stop = CancellationToken::new();
    let http_task = if listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| RunError::Http {
                addr: listen.clone(),
                source,
            })?;
        Some(hedwig_service::ops::serve(
            listener,
            http::app(parts.shell.clone()),
            parts.shell.clone(),
            || {},
            http_stop.clone(),
        ))
    };
    tracing::info!(
        concurrency,
        beanstalkd = ?parts.worker.config.beanstalkd,
        tube_prefix = %parts.worker.tubes,
        "worker started"
    );
    let draining = parts.shell.drain_on(shutdown.clone());
    let reaper_stop = CancellationToken::new();
    let reaper = {
        let deliverer = parts.worker.deliverer.clone();
        let worker = parts.worker.clone();
        let stop = reaper_stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        deliverer.dests.reap(false);
                        if let Some(events) = &worker.events {
                            worker.metrics.ledger_emitters(events.backlog(), events.events_dropped());
                        }
                    }
                    _ = stop.cancelled() => break,
                }
            }
            deliverer.dests.reap(true);
        })
    };
    let reporter_stop = CancellationToken::new();
    let reporter = parts
        .tls_rpt
        .clone()
        .map(|r| tokio::spawn(r.run(reporter_stop.clone())));
    queue::run_tasks(parts.worker.clone(), concurrency, shutdown).await;
    // The events of the last attempts that beanstalkd did not take yet (it was restarting):
    // a few more seconds for them, as for a delivery in flight.
    if let Some(events) = &parts.worker.events {
        events.drain(parts.worker.config.shutdown_grace).await;
    }
    reaper_stop.cancel();
    let _ = reaper.await;
    // The counts written once more (a report being sent is abandoned: its period is sent by
    // no one, the RFC's reports being best effort).
    reporter_stop.cancel();
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    let _ = draining.await;
    http_stop.cancel();
    if let Some(task) = http_task {
        let _ = task.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// `worker check-config`: every problem found, one per line (empty when all is well):
/// config semantics, DKIM keys, the TLS CA file, the MTA-STS state directory, the capture
/// Maildir, IP pool addresses not on this machine, beanstalkd reachability.
pub async fn check(config: &Config) -> Vec<String> {
    let checked = config.check();
    let mut problems = Vec::new();
    match &checked {
        Err(e) => problems.extend(e.iter().cloned()),
        Ok(settings) => {
            for pool in settings.pools.all() {
                for ip in pool.addresses() {
                    if let Err(e) = pools::probe_bind(ip) {
                        problems.push(format!(
                            "pools.{}: cannot send from {ip}: {e} (is it an address of this \
                             machine?)",
                            pool.name
                        ));
                    }
                }
            }
        }
    }
    if !config.dkim.keys.is_empty() {
        if let Err(e) = hedwig_message::dkim::Signer::new(&config.dkim) {
            problems.push(format!("dkim: {e}"));
        }
    }
    if let Err(e) = smtp::tls::TlsClients::new(config.tls.ca_file.as_deref()) {
        problems.push(e);
    }
    if let (true, Some(dir)) = (config.mta_sts.enabled, &config.mta_sts.state_dir) {
        let probe = dir.join(".hedwig-write-test");
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"")) {
            problems.push(format!("mta_sts.state_dir {}: {e}", dir.display()));
        }
        let _ = std::fs::remove_file(probe);
    }
    if let Some(dir) = &config.capture_maildir {
        let probe = capture::store(dir, "", &[], b"");
        match probe {
            Ok(path) => {
                let _ = std::fs::remove_file(path);
            }
            Err(e) => problems.push(format!("capture_maildir {}: {e}", dir.display())),
        }
    }
    for addr in &config.beanstalkd {
        let connect = beanstalk::Client::connect(addr.clone());
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("beanstalkd {addr}: {e}")),
            Err(_) => problems.push(format!("beanstalkd {addr}: no answer within 5s")),
        }
    }
    problems
}

/// `worker check-config`'s warnings: what receivers will hold against this relay without it
/// being wrong here. For each IP pool address, forward-confirmed reverse DNS (its PTR names
/// the pool's EHLO name, which resolves back to it), asked of `nameservers` without a cache.
pub async fn check_warnings(config: &Config) -> Vec<String> {
    let Ok(settings) = config.check() else {
        return Vec::new();
    };
    if settings.pools.is_empty() {
        return Vec::new();
    }
    let timeout = Duration::from_secs(5);
    let dns = match hedwig_dns::resolver(&settings.nameservers, timeout, hedwig_dns::Cache::Off) {
        Ok(dns) => dns,
        Err(e) => return vec![format!("pools: cannot check reverse DNS: {e}")],
    };
    let mut warnings = Vec::new();
    for pool in settings.pools.all() {
        for ip in pool.addresses() {
            if let Some(why) = pools::fcrdns(&dns, ip, &pool.ehlo).await {
                warnings.push(format!("pools.{}: {why}", pool.name));
            }
        }
    }
    warnings
}
