//! The dispatcher: sends the webhook outbox, in the post office that runs the ledger writer.
//!
//! One task per endpoint, each with its own HTTP client, so a slow, failing or hanging
//! endpoint only ever holds up itself (and never delivery: the writer and the workers do not
//! wait for it). A task claims due rows (leased for longer than sending them can take, so that
//! another post office on the same PostgreSQL takes them only after this one is surely done
//! with them), POSTs each signed ([`super::sign`]) with up to `concurrency` in flight, and
//! marks it: a 2xx answer is done; anything else (an error status, a refused connection, a
//! timeout) is tried again after an exponential backoff with jitter, until `max_age` after
//! the event was queued, and then marked failed (visible in `postoffice webhooks`). The body
//! and its event id never change between tries.
//!
//! Not here: what goes in the outbox (the writer, `hedwig_ledger::webhook`).

use std::sync::Arc;
use std::time::Duration;

use hedwig_ledger::webhook::{Claimed, SendResult};
use hedwig_ledger::Store;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::Endpoint;

/// How often an idle endpoint task looks for due rows (retries coming due, and rows another
/// post office's writer added); rows this process's writer adds wake it at once.
const POLL: Duration = Duration::from_millis(500);
/// Rows claimed at once per endpoint: this many per request slot (`concurrency`). A claim
/// and the record of its results are one transaction each, so a lot of 32 rows (at the
/// default `concurrency` of 4) costs two disk flushes on SQLite.
const CLAIM_PER_SLOT: u32 = 8;

/// What the dispatcher did: `/metrics` counters (`hedwig_ledger_webhooks_*`).
#[derive(Debug, Clone, Default)]
pub struct DispatchStats {
    /// Requests answered 2xx.
    pub sent: prometheus_client::metrics::counter::Counter,
    /// Requests that failed and will be tried again.
    pub retried: prometheus_client::metrics::counter::Counter,
    /// Events given up on after `max_age`.
    pub failed: prometheus_client::metrics::counter::Counter,
}

/// Runs one task per endpoint until `shutdown`. `owner` names this post office in the
/// leases (unique per process).
pub async fn run(
    store: Store,
    endpoints: Vec<Endpoint>,
    owner: String,
    stats: DispatchStats,
    shutdown: CancellationToken,
) {
    // Rows this post office had claimed before a crash or restart are due at once.
    match store.release_webhook_leases(&owner).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            rows = n,
            "webhooks: leases of the previous run freed; sending them again"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "webhooks: cannot free the previous run's leases; they run out by themselves")
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        tasks.spawn(serve(
            store.clone(),
            endpoint,
            owner.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// The lease owner name of the post office listening on `listen` on this machine: the same
/// after a restart (so that the new process frees the leases of the one that died), never
/// the same for two post offices running at once (they cannot share a host and port).
pub fn owner_name(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host}/{listen}")
}

fn now_ms() -> u64 {
    hedwig_queue::event::now_millis()
}

/// The delay before try `attempts + 1` after `attempts` failed ones: `backoff` doubled per
/// failure up to `max_backoff`, then a random part of it between a half and all (so that
/// many events that failed together do not come back together).
pub fn delay(endpoint: &Endpoint, attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = endpoint
        .backoff
        .saturating_mul(1u32 << exp)
        .min(endpoint.max_backoff);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

async fn serve(
    store: Store,
    endpoint: Endpoint,
    owner: String,
    stats: DispatchStats,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(endpoint.timeout)
        .connect_timeout(endpoint.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hedwig-postoffice/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.name, error = %e, "webhooks: cannot make an HTTP client; this endpoint gets nothing");
            return;
        }
    };
    let endpoint = Arc::new(endpoint);
    // A claim holds `concurrency * CLAIM_PER_SLOT` rows, sent `concurrency` at a time: done
    // within CLAIM_PER_SLOT timeouts; the lease allows one more, and a minute.
    let claim = (endpoint.concurrency as u32).saturating_mul(CLAIM_PER_SLOT);
    let lease = endpoint.timeout * (CLAIM_PER_SLOT + 1) + Duration::from_secs(60);
    let mut store_down = false;
    let mut down_since: Option<u64> = None;
    tracing::info!(endpoint = %endpoint.name, url = %endpoint.url, "webhooks: dispatcher started");
    let outbox_filled = store.outbox_filled();
    let mut filled = std::pin::pin!(outbox_filled.clone().notified_owned());
    while !shutdown.is_cancelled() {
        // Registered before the claim, so that a write committed after the claim's read
        // wakes the wait below instead of slipping past it.
        filled.set(outbox_filled.clone().notified_owned());
        filled.as_mut().enable();
        let now = now_ms();
        let claimed = match store
            .claim_webhooks(
                &endpoint.name,
                &owner,
                now,
                now + lease.as_millis() as u64,
                claim,
            )
            .await
        {
            Ok(c) => {
                if std::mem::take(&mut store_down) {
                    tracing::info!(endpoint = %endpoint.name, "webhooks: ledger store available again");
                }
                c
            }
            Err(e) => {
                if !std::mem::replace(&mut store_down, true) {
                    tracing::warn!(endpoint = %endpoint.name, error = %e, "webhooks: cannot read the outbox; retrying");
                }
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = filled.as_mut() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let gate = Arc::new(tokio::sync::Semaphore::new(endpoint.concurrency));
        let mut sends = tokio::task::JoinSet::new();
        for row in claimed {
            let permit = tokio::select! {
                permit = gate.clone().acquire_owned() => permit,
                // The rows not handed out yet keep their lease (sent again later); the
                // collection below records the sends that finished.
                _ = shutdown.cancelled() => break,
            };
            let Ok(permit) = permit else {
                break;
            };
            let (client, endpoint, stats) = (client.clone(), endpoint.clone(), stats.clone());
            sends.spawn(async move {
                let result = send(&client, &endpoint, &row).await;
                drop(permit);
                let failing = !matches!(result, SendResult::Done { .. });
                match &result {
                    SendResult::Done { .. } => stats.sent.inc(),
                    SendResult::Retry { give_up: true, error, .. } => {
                        tracing::warn!(endpoint = %endpoint.name, event = %row.event_id, error = %error, "webhooks: giving up on an event after max_age; marked failed");
                        stats.failed.inc()
                    }
                    SendResult::Retry { .. } => stats.retried.inc(),
                };
                (failing, (row.event_id, now_ms(), result))
            });
        }
        // The results of a claimed lot are recorded together, in one transaction (one disk
        // flush on SQLite for the lot instead of one per request); the lot's lease covers
        // the wait, and rows a crash leaves unrecorded are sent again (at least once).
        let mut failures = 0;
        let mut total = 0;
        let mut results = Vec::new();
        loop {
            tokio::select! {
                done = sends.join_next() => match done {
                    Some(Ok((failing, result))) => {
                        total += 1;
                        failures += usize::from(failing);
                        results.push(result);
                    }
                    Some(Err(_)) => {
                        total += 1;
                        failures += 1;
                    }
                    None => break,
                },
                // Sends in flight are dropped: their leases run out and they are sent again
                // (by this post office after a restart, or another one): at least once. The
                // ones that finished are recorded, so that answered rows are not sent again.
                _ = shutdown.cancelled() => {
                    while let Some(done) = sends.try_join_next() {
                        if let Ok((_, result)) = done {
                            results.push(result);
                        }
                    }
                    record(&store, &endpoint.name, &owner, &mut results).await;
                    return;
                }
            }
        }
        record(&store, &endpoint.name, &owner, &mut results).await;
        // One line when an endpoint starts failing, one when it answers again.
        match (down_since, failures == total) {
            (None, true) => {
                down_since = Some(now);
                tracing::warn!(endpoint = %endpoint.name, "webhooks: endpoint failing; events are retried with backoff");
            }
            (Some(_), false) => {
                down_since = None;
                tracing::info!(endpoint = %endpoint.name, "webhooks: endpoint answering again");
            }
            _ => {}
        }
    }
}

/// Records `results` (and empties it). On failure the rows keep their lease, run out of it
/// and are sent again: at least once.
async fn record(
    store: &Store,
    endpoint: &str,
    owner: &str,
    results: &mut Vec<(String, u64, SendResult)>,
) {
    if results.is_empty() {
        return;
    }
    if let Err(e) = store.finish_webhooks(endpoint, owner, results).await {
        tracing::warn!(endpoint, rows = results.len(), error = %e, "webhooks: cannot record sends; they are sent again after their lease");
    }
    results.clear();
}

/// One POST of a claimed row, and how it went.
async fn send(client: &reqwest::Client, endpoint: &Endpoint, row: &Claimed) -> SendResult {
    let now = now_ms();
    let signature = super::sign::signature(&endpoint.secret, now / 1000, row.payload.as_bytes());
    let answer = client
        .post(endpoint.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(super::sign::HEADER, signature)
        .header("Hedwig-Event-Id", &row.event_id)
        .header("Hedwig-Event-Type", &row.event_type)
        .header("Hedwig-Delivery-Attempt", (row.attempts + 1).to_string())
        .body(row.payload.clone())
        .send()
        .await;
    let (code, error) = match answer {
        Ok(r) if r.status().is_success() => {
            return SendResult::Done {
                code: r.status().as_u16(),
            }
        }
        Ok(r) => (Some(r.status().as_u16()), format!("HTTP {}", r.status())),
        Err(e) if e.is_timeout() => (None, format!("timed out after {:?}", endpoint.timeout)),
        Err(e) if e.is_connect() => (None, format!("cannot connect: {}", source_of(&e))),
        Err(e) => (None, source_of(&e)),
    };
    let attempts = row.attempts + 1;
    let jitter: f64 = rand::thread_rng().gen();
    let next_at = now + delay(endpoint, attempts, jitter).as_millis() as u64;
    let give_up = next_at.saturating_sub(row.first_at) > endpoint.max_age.as_millis() as u64;
    SendResult::Retry {
        code,
        error,
        next_at,
        give_up,
    }
}

/// An error with its causes, for the outbox's `last_error`.
fn source_of(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let e = super::super::check(&[]).unwrap();
        assert!(e.is_empty());
        let endpoint = Endpoint {
            name: "a".into(),
            url: reqwest::Url::parse("http://127.0.150.1/").unwrap(),
            secret: "x".repeat(16),
            route: hedwig_ledger::webhook::Route {
                name: "a".into(),
                events: Default::default(),
                hosts: vec![],
                sender_domains: vec![],
            },
            timeout: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            concurrency: 1,
        };
        assert_eq!(delay(&endpoint, 1, 1.0), Duration::from_secs(10));
        assert_eq!(delay(&endpoint, 2, 1.0), Duration::from_secs(20));
        assert_eq!(delay(&endpoint, 3, 0.0), Duration::from_secs(20));
        assert_eq!(delay(&endpoint, 9, 1.0), Duration::from_secs(60));
        assert_eq!(delay(&endpoint, 500, 0.5), Duration::from_secs(45));
    }
}
