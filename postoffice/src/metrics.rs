//! Prometheus metrics: requests by status, messages and bytes queued by host.

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
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    pub messages: Family<HostLabel, Counter>,
    pub bytes: Family<HostLabel, Counter>,
    pub duplicates: Counter,
    pub queue_seconds: Histogram,
    pub connections: ConnectionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hedwig_postoffice");
        let requests = Family::<StatusLabel, Counter>::default();
        let messages = Family::<HostLabel, Counter>::default();
        let bytes = Family::<HostLabel, Counter>::default();
        let duplicates = Counter::default();
        let queue_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "requests",
            "Intake requests by HTTP status",
            requests.clone(),
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
            "Posts answered from the duplicate-id window",
            duplicates.clone(),
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
        Metrics {
            registry,
            connections,
            requests,
            messages,
            bytes,
            duplicates,
            queue_seconds,
        }
    }
}

impl Metrics {
    pub fn status(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    pub fn queued(&self, host: &str, bytes: usize) {
        let label = HostLabel {
            host: host.to_string(),
        };
        self.messages.get_or_create(&label).inc();
        self.bytes.get_or_create(&label).inc_by(bytes as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
