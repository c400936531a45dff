//! mailman's metrics (`prometheus-client`, served on `/metrics` by [`crate::http`]) and the
//! key state `/health` reads.
//!
//! No `host` label: every message mailman handles is from its one configured `fqdn`, which
//! the scrape target already names.

use std::sync::atomic::{AtomicBool, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::post::RetryReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The outcomes of SMTP AUTH attempts, as labelled in `mailman_auth_attempts_total`.
pub const AUTH_OUTCOMES: [&str; 4] = ["accepted", "refused", "blocked", "unavailable"];

/// Every counter mailman keeps. Shared by all tasks.
pub struct Metrics {
    /// SMTP connections accepted from allowed clients (`mailman_connections_total`).
    pub connections_total: Counter,
    pub connections_open: Gauge,
    pub connections_denied: Counter,
    pub connections_over_limit: Counter,
    pub connections_over_client_limit: Counter,
    /// Sessions cut for being too slow: a command line, DATA below `min_data_rate`, or the
    /// whole session over `session_timeout`.
    pub sessions_timed_out: Counter,
    /// `250` given and the postoffice had queued it.
    pub messages_forwarded_inline: Counter,
    /// `250` given, message kept in the spool for the background retries.
    pub messages_spooled: Counter,
    /// `5xx` given because the postoffice refused the message.
    pub messages_rejected: Counter,
    /// Refused before spooling: too big, spool full, disk error.
    pub messages_refused: Counter,
    /// Spooled messages the background retries got queued.
    pub messages_forwarded_later: Counter,
    /// Spooled messages the postoffice refused for good later (set aside).
    pub messages_set_aside: Counter,
    spool_depth: Gauge,
    spool_bytes: Gauge,
    spool_oldest_age_seconds: Gauge,
    forward_failures: Family<ReasonLabel, Counter>,
    /// The container map (`docker.socket`): its size, refreshes and Engine API errors.
    pub docker: crate::docker::DockerMetrics,
    /// Commands refused for a container's label policy (`hedwig.sender-domains`,
    /// `hedwig.rate`, an unreadable label).
    pub app_policy_refused: Counter,
    auth_attempts: Family<OutcomeLabel, Counter>,
    /// The postoffice refuses our key: the last post or key check got a 401.
    pub wrong_key: AtomicBool,
    /// Unix seconds of the last "key refused" log line (one per `key_check_interval`).
    pub wrong_key_logged: AtomicU64,
}

/// The spool's state, filled in by the retry loop when metrics are read.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpoolState {
    pub depth: u64,
    pub bytes: u64,
    pub oldest_age_seconds: u64,
}

impl Metrics {
    /// Creates the metrics and registers them (prefix `mailman`) in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            connections_total: Counter::default(),
            connections_open: Gauge::default(),
            connections_denied: Counter::default(),
            connections_over_limit: Counter::default(),
            connections_over_client_limit: Counter::default(),
            sessions_timed_out: Counter::default(),
            messages_forwarded_inline: Counter::default(),
            messages_spooled: Counter::default(),
            messages_rejected: Counter::default(),
            messages_refused: Counter::default(),
            messages_forwarded_later: Counter::default(),
            messages_set_aside: Counter::default(),
            spool_depth: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_oldest_age_seconds: Gauge::default(),
            forward_failures: Family::default(),
            docker: crate::docker::DockerMetrics::default(),
            app_policy_refused: Counter::default(),
            auth_attempts: Family::default(),
            wrong_key: AtomicBool::new(false),
            wrong_key_logged: AtomicU64::new(0),
        };
        let r = registry.sub_registry_with_prefix("mailman");
        // Counters are registered without `_total`: the encoder appends it.
        let counters = [
            (
                "connections",
                "SMTP connections accepted from allowed clients",
                &m.connections_total,
            ),
            (
                "connections_denied",
                "Connections refused: client not in allowed_networks",
                &m.connections_denied,
            ),
            (
                "connections_over_limit",
                "Connections refused: max_connections reached",
                &m.connections_over_limit,
            ),
            (
                "connections_over_client_limit",
                "Connections refused: max_connections_per_client reached for that address",
                &m.connections_over_client_limit,
            ),
            (
                "sessions_timed_out",
                "Sessions closed for a timeout (command line, DATA rate, session_timeout)",
                &m.sessions_timed_out,
            ),
            (
                "messages_forwarded_inline",
                "Messages queued by the postoffice while the client waited",
                &m.messages_forwarded_inline,
            ),
            (
                "messages_spooled",
                "Messages accepted and left in the spool for the background forwarder",
                &m.messages_spooled,
            ),
            (
                "messages_rejected",
                "Messages the postoffice refused while the client waited (client got 5xx)",
                &m.messages_rejected,
            ),
            (
                "messages_refused",
                "Messages refused before spooling (size, spool full, disk error)",
                &m.messages_refused,
            ),
            (
                "messages_forwarded_later",
                "Spooled messages the background forwarder got queued",
                &m.messages_forwarded_later,
            ),
            (
                "messages_set_aside",
                "Spooled messages the postoffice refused for good later (moved to rejected/)",
                &m.messages_set_aside,
            ),
            (
                "docker_api_errors",
                "Failed Docker Engine API calls (container map refreshes, the event stream)",
                &m.docker.api_errors,
            ),
            (
                "docker_refreshes",
                "Full refreshes of the container map",
                &m.docker.refreshes,
            ),
            (
                "app_policy_refused",
                "SMTP commands refused for a container's hedwig.* label policy",
                &m.app_policy_refused,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        let gauges = [
            (
                "connections_open",
                "SMTP connections open now",
                &m.connections_open,
            ),
            ("spool_depth", "Messages in the spool", &m.spool_depth),
            ("spool_bytes", "Bytes in the spool", &m.spool_bytes),
            (
                "spool_oldest_age_seconds",
                "Age of the oldest spooled message",
                &m.spool_oldest_age_seconds,
            ),
            (
                "docker_containers",
                "Container addresses in the map (docker.socket)",
                &m.docker.entries,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        // Every reason shows, at 0 until it happens.
        for reason in RetryReason::LABELS {
            drop(m.forward_failures.get_or_create(&ReasonLabel { reason }));
        }
        r.register(
            "forward_failures",
            "Failed posts to the postoffice, by reason",
            m.forward_failures.clone(),
        );
        for outcome in AUTH_OUTCOMES {
            drop(m.auth_attempts.get_or_create(&OutcomeLabel { outcome }));
        }
        r.register(
            "auth_attempts",
            "SMTP AUTH credentials checked, by outcome (blocked: the client address is over \
             auth.max_failures)",
            m.auth_attempts.clone(),
        );
        m
    }

    /// Counts one SMTP AUTH check.
    pub fn auth_checked(&self, outcome: &crate::smtp::AuthOutcome) {
        use crate::smtp::AuthOutcome as O;
        let outcome = match outcome {
            O::Accepted { .. } => "accepted",
            O::Refused => "refused",
            O::Blocked => "blocked",
            O::Unavailable => "unavailable",
        };
        self.auth_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts one failed post.
    pub fn forward_failed(&self, reason: &RetryReason) {
        self.forward_failures
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// Failed posts with this label.
    pub fn forward_failures(&self, label: &str) -> u64 {
        RetryReason::LABELS
            .into_iter()
            .find(|l| *l == label)
            .and_then(|reason| {
                self.forward_failures
                    .get(&ReasonLabel { reason })
                    .map(|c| c.get())
            })
            .unwrap_or(0)
    }

    /// Sets the spool gauges (before a scrape: the retry loop knows the spool's state).
    pub fn set_spool(&self, spool: SpoolState) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.spool_depth.set(gauge(spool.depth));
        self.spool_bytes.set(gauge(spool.bytes));
        self.spool_oldest_age_seconds
            .set(gauge(spool.oldest_age_seconds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_name_with_its_value() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.connections_total.inc();
        m.connections_open.inc();
        m.forward_failed(&RetryReason::Timeout);
        m.set_spool(SpoolState {
            depth: 3,
            bytes: 4096,
            oldest_age_seconds: 7,
        });
        let shell = hedwig_service::ops::Shell::new(registry);
        let text = shell.render();
        for line in [
            "mailman_connections_total 1",
            "mailman_connections_open 1",
            "mailman_messages_set_aside_total 0",
            "mailman_spool_depth 3",
            "mailman_spool_bytes 4096",
            "mailman_spool_oldest_age_seconds 7",
            "mailman_docker_containers 0",
            "mailman_docker_api_errors_total 0",
            "mailman_app_policy_refused_total 0",
            "mailman_forward_failures_total{reason=\"timeout\"} 1",
            "mailman_forward_failures_total{reason=\"wrong_key\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(m.forward_failures("timeout"), 1);
        assert_eq!(m.forward_failures("nonsense"), 0);
    }
}
