//! The worker's metrics (`prometheus-client`, served on `/metrics` by
//! `hedwig_service::ops`): deliveries per outcome, destination domain and sending host, the
//! delivery latency histogram, deliveries per IP pool and source address, and counters.
//!
//! Label values from messages are bounded: destination domains are capped at [`MAX_DOMAINS`]
//! per status (the rest count as `other`); the sending host is its name only for the hosts
//! in `metrics_hosts` (every other host is `other`, see `hedwig_service::metrics`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use hedwig_service::metrics::{HostLabels, OTHER};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::plan::Status;

/// Most distinct domain labels kept per status.
pub const MAX_DOMAINS: usize = 1000;
/// Upper bounds (seconds) of the delivery latency histogram.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// What the worker counts that is not about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A DNS lookup that failed (any kind).
    DnsFailure,
    TlsUsed,
    TlsNotUsed,
    /// A job that could not be decoded (buried): no host to name.
    BadJob,
    /// A smarthost login that failed or was not attempted (see [`crate::login`]).
    AuthFailure,
}

/// What the worker counts per message, labelled with the sending host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageCounter {
    /// A job re-put for a retry.
    Retry,
    /// A bounce queued.
    Bounce,
    /// A failed-tube record written.
    Failed,
    /// A bounce not sent: its sender had its `bounce_limits.per_sender` for the interval.
    BounceLimited,
    /// A message not delivered because it carried more `Received:` fields than `hop_limit`.
    Loop,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    status: &'static str,
    domain: String,
    host: String,
}

/// Labels of deliveries through an IP pool: both bounded by the configured pools.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    status: &'static str,
    pool: String,
    /// The pool address the connection came from; `none` when none was made.
    source: String,
}

/// An RFC 8460 result type (a fixed set) or a TLS-RPT report status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// Shared by all delivery tasks.
#[derive(Debug)]
pub struct Metrics {
    hosts: HostLabels,
    deliveries: Family<DeliveryLabels, PromCounter>,
    pool_deliveries: Family<PoolLabels, PromCounter>,
    mta_sts_results: Family<ResultLabel, PromCounter>,
    tls_rpt_reports: Family<StatusLabel, PromCounter>,
    /// (status, domain) pairs with a label of their own.
    domains: Mutex<HashSet<(&'static str, String)>>,
    latency: Histogram,
    plain: [PromCounter; 5],
    per_host: [Family<HostLabel, PromCounter>; 5],
    /// Ledger events waiting in the emitters' backlogs, and dropped for good (the emitters
    /// count; [`Metrics::ledger_emitters`] copies their numbers here).
    ledger_backlog: prometheus_client::metrics::gauge::Gauge,
    ledger_dropped: PromCounter,
    ledger_dropped_seen: std::sync::atomic::AtomicU64,
}

impl Counter {
    const ALL: [Counter; 5] = [
        Counter::DnsFailure,
        Counter::TlsUsed,
        Counter::TlsNotUsed,
        Counter::BadJob,
        Counter::AuthFailure,
    ];

    /// Name (without `hedwig_worker_` and `_total`) and help.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Counter::DnsFailure => ("dns_failures", "DNS lookups that failed"),
            Counter::TlsUsed => ("sessions_tls", "SMTP sessions that used TLS"),
            Counter::TlsNotUsed => ("sessions_plain", "SMTP sessions without TLS"),
            Counter::BadJob => ("bad_jobs", "Jobs that could not be decoded (buried)"),
            Counter::AuthFailure => (
                "auth_failures",
                "Smarthost logins that failed (535, no AUTH, no verified TLS); mail deferred",
            ),
        }
    }
}

impl MessageCounter {
    const ALL: [MessageCounter; 5] = [
        MessageCounter::Retry,
        MessageCounter::Bounce,
        MessageCounter::Failed,
        MessageCounter::Loop,
        MessageCounter::BounceLimited,
    ];

    fn describe(self) -> (&'static str, &'static str) {
        match self {
            MessageCounter::Retry => ("retries", "Jobs put back for a retry, by sending host"),
            MessageCounter::Bounce => ("bounces", "Bounces queued, by sending host"),
            MessageCounter::Failed => (
                "failed_records",
                "Failed-tube records written, by sending host",
            ),
            MessageCounter::Loop => (
                "loops",
                "Messages not delivered: more Received: fields than hop_limit, by sending host",
            ),
            MessageCounter::BounceLimited => (
                "bounces_limited",
                "Bounces not sent: the sender had its bounce_limits.per_sender, by sending host",
            ),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them (prefix `hedwig_worker`) in `registry`; `hosts`
    /// are the sending hosts with a label of their own.
    /// Copies the emitters' numbers: events in the backlogs now, dropped so far.
    pub fn ledger_emitters(&self, backlog: u64, dropped_total: u64) {
        use std::sync::atomic::Ordering;
        self.ledger_backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        let seen = self
            .ledger_dropped_seen
            .fetch_max(dropped_total, Ordering::Relaxed);
        if dropped_total > seen {
            self.ledger_dropped.inc_by(dropped_total - seen);
        }
    }

    pub fn register(registry: &mut Registry, hosts: HostLabels) -> Metrics {
        let m = Metrics {
            hosts,
            deliveries: Family::default(),
            pool_deliveries: Family::default(),
            mta_sts_results: Family::default(),
            tls_rpt_reports: Family::default(),
            domains: Mutex::new(HashSet::new()),
            latency: Histogram::new(BUCKETS),
            plain: Default::default(),
            per_host: Default::default(),
            ledger_backlog: Default::default(),
            ledger_dropped: Default::default(),
            ledger_dropped_seen: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("hedwig_worker");
        r.register(
            "ledger_events_backlog",
            "Ledger events beanstalkd did not take yet, waiting in memory",
            m.ledger_backlog.clone(),
        );
        r.register(
            "ledger_events_dropped",
            "Ledger events dropped for good (backlog full, or left at exit)",
            m.ledger_dropped.clone(),
        );
        r.register(
            "deliveries",
            "Recipients' delivery outcomes, by status, destination domain and sending host",
            m.deliveries.clone(),
        );
        r.register(
            "pool_deliveries",
            "Recipients' delivery outcomes through an IP pool, by status, pool and source address",
            m.pool_deliveries.clone(),
        );
        r.register(
            "mta_sts_results",
            "MTA-STS checks (sessions and policy fetches), by RFC 8460 result type",
            m.mta_sts_results.clone(),
        );
        r.register(
            "tls_rpt_reports",
            "TLS-RPT reports, one per policy domain and period, by status (sent, failed, no-rua)",
            m.tls_rpt_reports.clone(),
        );
        r.register(
            "delivery_seconds",
            "Time of one domain's delivery attempt",
            m.latency.clone(),
        );
        for c in MessageCounter::ALL {
            let (name, help) = c.describe();
            r.register(name, help, m.per_host[c as usize].clone());
        }
        for c in Counter::ALL {
            let (name, help) = c.describe();
            r.register(name, help, m.plain[c as usize].clone());
        }
        m
    }

    /// One recipient's outcome at `domain`, for a message from `host`.
    pub fn delivery(&self, status: Status, domain: &str, host: &str) {
        let domain = self.domain_label(status.as_str(), domain);
        self.deliveries
            .get_or_create(&DeliveryLabels {
                status: status.as_str(),
                domain,
                host: self.hosts.label(host),
            })
            .inc();
    }

    /// One recipient's outcome through IP pool `pool`, from `source` when a connection was
    /// made.
    pub fn pool_delivery(&self, status: Status, pool: &str, source: Option<std::net::IpAddr>) {
        self.pool_deliveries
            .get_or_create(&PoolLabels {
                status: status.as_str(),
                pool: pool.to_string(),
                source: source.map_or_else(|| "none".to_string(), |ip| ip.to_string()),
            })
            .inc();
    }

    /// One MTA-STS check ended in `result` (an RFC 8460 result type).
    pub fn mta_sts_result(&self, result: &'static str) {
        self.mta_sts_results
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// MTA-STS checks counted with `result` (for tests and logs).
    pub fn mta_sts_results(&self, result: &'static str) -> u64 {
        self.mta_sts_results
            .get(&ResultLabel { result })
            .map_or(0, |c| c.get())
    }

    /// One TLS-RPT report (a domain's, for a period) ended in `status`.
    pub fn tls_rpt_report(&self, status: &'static str) {
        self.tls_rpt_reports
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    fn domain_label(&self, status: &'static str, domain: &str) -> String {
        // A panic while holding the lock leaves a plain set behind: still usable.
        let mut known = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        let key = (status, domain.to_string());
        if known.contains(&key) {
            return key.1;
        }
        if known.iter().filter(|(s, _)| *s == status).count() >= MAX_DOMAINS {
            return OTHER.to_string();
        }
        known.insert(key.clone());
        key.1
    }

    /// How long one domain's delivery attempt took.
    pub fn latency(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    pub fn incr(&self, counter: Counter) {
        self.plain[counter as usize].inc();
    }

    /// Counts one of `counter` for a message from `host`.
    pub fn count(&self, counter: MessageCounter, host: &str) {
        self.per_host[counter as usize]
            .get_or_create(&HostLabel {
                host: self.hosts.label(host),
            })
            .inc();
    }

    /// A counter's value (for tests and logs).
    pub fn get(&self, counter: Counter) -> u64 {
        self.plain[counter as usize].get()
    }

    /// Deliveries counted with `status` at `domain` for `host` (its label: a host not in
    /// `metrics_hosts` is `other`).
    pub fn deliveries(&self, status: Status, domain: &str, host: &str) -> u64 {
        self.deliveries
            .get(&DeliveryLabels {
                status: status.as_str(),
                domain: domain.to_string(),
                host: host.to_string(),
            })
            .map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(hosts: &[&str]) -> (Metrics, hedwig_service::ops::Shell) {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry, HostLabels::new(hosts));
        (m, hedwig_service::ops::Shell::new(registry))
    }

    #[test]
    fn ledger_emitter_numbers_are_copied() {
        let (m, shell) = metrics(&[]);
        m.ledger_emitters(3, 2);
        m.ledger_emitters(0, 5);
        // An older reading never takes the counter back.
        m.ledger_emitters(0, 4);
        let text = shell.render();
        for line in [
            "hedwig_worker_ledger_events_backlog 0",
            "hedwig_worker_ledger_events_dropped_total 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn renders_counts_and_histogram() {
        let (m, shell) = metrics(&["web1.example.net"]);
        m.delivery(Status::Delivered, "example.com", "web1.example.net");
        m.delivery(Status::Delivered, "example.com", "WEB1.example.net");
        m.delivery(Status::Deferred, "example.org", "web9.example.net");
        m.latency(Duration::from_millis(80));
        m.latency(Duration::from_secs(3));
        m.count(MessageCounter::Retry, "web9.example.net");
        m.incr(Counter::TlsUsed);
        m.pool_delivery(Status::Delivered, "bulk", "192.0.2.20".parse().ok());
        m.pool_delivery(Status::Deferred, "bulk", None);
        let text = shell.render();
        for line in [
            "hedwig_worker_pool_deliveries_total{status=\"delivered\",pool=\"bulk\",source=\"192.0.2.20\"} 1",
            "hedwig_worker_pool_deliveries_total{status=\"deferred\",pool=\"bulk\",source=\"none\"} 1",
            "hedwig_worker_deliveries_total{status=\"delivered\",domain=\"example.com\",host=\"web1.example.net\"} 2",
            "hedwig_worker_deliveries_total{status=\"deferred\",domain=\"example.org\",host=\"other\"} 1",
            "hedwig_worker_delivery_seconds_bucket{le=\"0.1\"} 1",
            "hedwig_worker_delivery_seconds_bucket{le=\"5.0\"} 2",
            "hedwig_worker_delivery_seconds_count 2",
            "hedwig_worker_retries_total{host=\"other\"} 1",
            "hedwig_worker_sessions_tls_total 1",
            "hedwig_worker_bad_jobs_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(m.get(Counter::TlsUsed), 1);
        assert_eq!(
            m.deliveries(Status::Delivered, "example.com", "web1.example.net"),
            2
        );
    }

    #[test]
    fn domain_labels_are_capped() {
        let (m, _) = metrics(&[]);
        for i in 0..MAX_DOMAINS + 5 {
            m.delivery(Status::Delivered, &format!("d{i}.example"), "h");
        }
        assert_eq!(m.deliveries(Status::Delivered, "other", "other"), 5);
        assert_eq!(m.deliveries(Status::Delivered, "d0.example", "other"), 1);
        // The cap is per status.
        m.delivery(Status::Deferred, "new.example", "h");
        assert_eq!(m.deliveries(Status::Deferred, "new.example", "other"), 1);
    }
}
