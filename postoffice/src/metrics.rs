//! The post office's metrics (`prometheus-client`, registered in the registry of its
//! `hedwig_service::ops::Shell`): requests by status, messages and bytes queued by sending
//! host, connections.
//!
//! The `host` label is the authenticated sending host: a post reaches `queued` only after its
//! key (derived from the secret for that one fqdn) was checked, so the label values are the
//! hosts the operator provisioned, never text a client chose.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The connection layer's metrics ([`crate::server`]); cheap to clone (shared counters).
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections the server closed, by reason: `timeout` (header or idle), `shed` (closed
    /// for a new one at a cap), `refused` (new one at a cap with none to close), `tls`
    /// (handshake failed or timed out).
    pub closed: Family<ReasonLabel, Counter>,
    pub open: Gauge,
}

impl ConnectionMetrics {
    pub fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// The post office's metrics.
pub struct Metrics {
    pub requests: Family<StatusLabel, Counter>,
    /// `POST /status` requests by HTTP status.
    pub status_requests: Family<StatusLabel, Counter>,
    /// One-click unsubscribe requests by result.
    pub unsubscribes: Family<ReasonLabel, Counter>,
    pub messages: Family<HostLabel, Counter>,
    pub bytes: Family<HostLabel, Counter>,
    pub duplicates: Family<HostLabel, Counter>,
    /// Recipients taken out of posts because they are on the suppression list.
    pub suppressed: Family<HostLabel, Counter>,
    /// Entries in intake's copy of the suppression list.
    pub suppression_entries: Gauge,
    pub queue_seconds: Histogram,
    pub connections: ConnectionMetrics,
    /// The ledger admin API's connections (`api_connections_*`).
    pub api_connections: ConnectionMetrics,
    /// The ledger's (prefix `hedwig_ledger`).
    pub ledger: crate::ledger::LedgerMetrics,
    /// The bounce listener's (`bounce_*`).
    pub bounce: crate::bounce::metrics::BounceMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them (prefix `hedwig_postoffice`) in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let ledger = crate::ledger::LedgerMetrics::register(registry);
        let registry = registry.sub_registry_with_prefix("hedwig_postoffice");
        let requests = Family::<StatusLabel, Counter>::default();
        let status_requests = Family::<StatusLabel, Counter>::default();
        let unsubscribes = Family::<ReasonLabel, Counter>::default();
        let messages = Family::<HostLabel, Counter>::default();
        let bytes = Family::<HostLabel, Counter>::default();
        let duplicates = Family::<HostLabel, Counter>::default();
        let suppressed = Family::<HostLabel, Counter>::default();
        let suppression_entries = Gauge::default();
        let queue_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "requests",
            "Intake requests by HTTP status",
            requests.clone(),
        );
        registry.register(
            "status_requests",
            "POST /status requests (a host asking for its message's timeline) by HTTP status",
            status_requests.clone(),
        );
        registry.register(
            "unsubscribes",
            "One-click unsubscribe requests by result: done, invalid, expired, unavailable, too-large",
            unsubscribes.clone(),
        );
        registry.register(
            "messages_queued",
            "Messages queued by sending host",
            messages.clone(),
        );
        registry.register(
            "bytes_queued",
            "Message bytes queued by sending host",
            bytes.clone(),
        );
        registry.register(
            "duplicates",
            "Posts answered from the duplicate-id window, by sending host",
            duplicates.clone(),
        );
        registry.register(
            "recipients_suppressed",
            "Recipients taken out of posts because they are on the suppression list, by sending host",
            suppressed.clone(),
        );
        registry.register(
            "suppression_entries",
            "Entries in intake's copy of the suppression list",
            suppression_entries.clone(),
        );
        registry.register(
            "queue_put_seconds",
            "Time for beanstalkd to acknowledge a put",
            queue_seconds.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "connections_closed",
            "Connections closed by the post office: timeout, shed, refused, tls",
            connections.closed.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            connections.open.clone(),
        );
        let api_connections = ConnectionMetrics::default();
        registry.register(
            "api_connections_closed",
            "Admin API connections closed by the post office: timeout, shed, refused",
            api_connections.closed.clone(),
        );
        registry.register(
            "api_connections_open",
            "Admin API connections open now",
            api_connections.open.clone(),
        );
        let bounce = crate::bounce::metrics::BounceMetrics::register(registry);
        Metrics {
            ledger,
            bounce,
            connections,
            api_connections,
            requests,
            status_requests,
            unsubscribes,
            messages,
            bytes,
            duplicates,
            suppressed,
            suppression_entries,
            queue_seconds,
        }
    }

    pub fn status(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// A one-click unsubscribe request with `result`.
    pub fn unsubscribe(&self, result: &'static str) {
        self.unsubscribes
            .get_or_create(&ReasonLabel { reason: result })
            .inc();
    }

    /// A `POST /status` answered with `status`.
    pub fn status_request(&self, status: u16) {
        self.status_requests
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// A post from `host` answered from the duplicate-id window.
    pub fn duplicate(&self, host: &str) {
        self.duplicates
            .get_or_create(&HostLabel {
                host: host.to_string(),
            })
            .inc();
    }

    /// `n` recipients of a post from `host` suppressed.
    pub fn suppressed(&self, host: &str, n: usize) {
        if n > 0 {
            self.suppressed
                .get_or_create(&HostLabel {
                    host: host.to_string(),
                })
                .inc_by(n as u64);
        }
    }

    pub fn queued(&self, host: &str, bytes: usize) {
        let label = HostLabel {
            host: host.to_string(),
        };
        self.messages.get_or_create(&label).inc();
        self.bytes.get_or_create(&label).inc_by(bytes as u64);
    }
}
