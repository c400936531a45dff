//! Counters and a latency histogram, rendered in the Prometheus text format.
//!
//! Deliveries are counted per outcome and destination domain; the number of distinct domain
//! labels is capped ([`MAX_DOMAINS`], the rest count as `other`) so memory stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::plan::Status;

/// Most distinct domain labels kept.
pub const MAX_DOMAINS: usize = 1000;
/// Upper bounds (seconds) of the delivery latency histogram.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// What the worker counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A job re-put for a retry.
    Retry,
    /// A bounce queued.
    Bounce,
    /// A failed-tube record written.
    Failed,
    /// A DNS lookup that failed (any kind).
    DnsFailure,
    TlsUsed,
    TlsNotUsed,
    /// A job that could not be decoded (buried).
    BadJob,
    /// A bounce not sent: its sender had its `bounce_limits.per_sender` for the interval.
    BounceLimited,
    /// A message not delivered because it carried more `Received:` fields than `hop_limit`.
    Loop,
}

#[derive(Debug, Default)]
struct Inner {
    deliveries: BTreeMap<(&'static str, String), u64>,
    buckets: [u64; BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
    counters: BTreeMap<&'static str, u64>,
}

/// Shared by all delivery tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Retry => "hedwig_worker_retries_total",
            Counter::Bounce => "hedwig_worker_bounces_total",
            Counter::Failed => "hedwig_worker_failed_records_total",
            Counter::DnsFailure => "hedwig_worker_dns_failures_total",
            Counter::TlsUsed => "hedwig_worker_sessions_tls_total",
            Counter::TlsNotUsed => "hedwig_worker_sessions_plain_total",
            Counter::BadJob => "hedwig_worker_bad_jobs_total",
            Counter::Loop => "hedwig_worker_loops_total",
            Counter::BounceLimited => "hedwig_worker_bounces_limited_total",
        }
    }
}

impl Metrics {
    /// One recipient's outcome at `domain`.
    pub fn delivery(&self, status: Status, domain: &str) {
        let mut inner = self.lock();
        let known = inner
            .deliveries
            .keys()
            .filter(|(s, _)| *s == status.as_str())
            .count();
        let key = if known >= MAX_DOMAINS
            && !inner
                .deliveries
                .contains_key(&(status.as_str(), domain.to_string()))
        {
            "other".to_string()
        } else {
            domain.to_string()
        };
        *inner.deliveries.entry((status.as_str(), key)).or_default() += 1;
    }

    /// How long one domain's delivery attempt took.
    pub fn latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut inner = self.lock();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                inner.buckets[i] += 1;
            }
        }
        inner.latency_sum += secs;
        inner.latency_count += 1;
    }

    pub fn incr(&self, counter: Counter) {
        *self.lock().counters.entry(counter.name()).or_default() += 1;
    }

    /// A counter's value (for tests and logs).
    pub fn get(&self, counter: Counter) -> u64 {
        self.lock()
            .counters
            .get(counter.name())
            .copied()
            .unwrap_or(0)
    }

    /// Deliveries counted with `status` at `domain`.
    pub fn deliveries(&self, status: Status, domain: &str) -> u64 {
        self.lock()
            .deliveries
            .get(&(status.as_str(), domain.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        out.push_str("# TYPE hedwig_worker_deliveries_total counter\n");
        for ((status, domain), n) in &inner.deliveries {
            let _ = writeln!(
                out,
                "hedwig_worker_deliveries_total{{status=\"{status}\",domain=\"{}\"}} {n}",
                domain.replace(['"', '\\', '\n'], "_")
            );
        }
        out.push_str("# TYPE hedwig_worker_delivery_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hedwig_worker_delivery_seconds_bucket{{le=\"{bound}\"}} {}",
                inner.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "hedwig_worker_delivery_seconds_bucket{{le=\"+Inf\"}} {}",
            inner.latency_count
        );
        let _ = writeln!(
            out,
            "hedwig_worker_delivery_seconds_sum {}",
            inner.latency_sum
        );
        let _ = writeln!(
            out,
            "hedwig_worker_delivery_seconds_count {}",
            inner.latency_count
        );
        for counter in [
            Counter::Retry,
            Counter::Bounce,
            Counter::Failed,
            Counter::DnsFailure,
            Counter::TlsUsed,
            Counter::TlsNotUsed,
            Counter::BadJob,
            Counter::Loop,
            Counter::BounceLimited,
        ] {
            let name = counter.name();
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name} {}",
                inner.counters.get(name).copied().unwrap_or(0)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        m.delivery(Status::Delivered, "example.com");
        m.delivery(Status::Delivered, "example.com");
        m.delivery(Status::Deferred, "example.org");
        m.latency(Duration::from_millis(80));
        m.latency(Duration::from_secs(3));
        m.incr(Counter::Retry);
        let text = m.render();
        assert!(
            text.contains(
                "hedwig_worker_deliveries_total{status=\"delivered\",domain=\"example.com\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "hedwig_worker_deliveries_total{status=\"deferred\",domain=\"example.org\"} 1"
        ));
        assert!(text.contains("hedwig_worker_delivery_seconds_bucket{le=\"0.1\"} 1"));
        assert!(text.contains("hedwig_worker_delivery_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("hedwig_worker_delivery_seconds_count 2"));
        assert!(text.contains("hedwig_worker_retries_total 1"));
        assert_eq!(m.get(Counter::Retry), 1);
    }

    #[test]
    fn domain_labels_are_capped() {
        let m = Metrics::default();
        for i in 0..MAX_DOMAINS + 5 {
            m.delivery(Status::Delivered, &format!("d{i}.example"));
        }
        assert_eq!(m.deliveries(Status::Delivered, "other"), 5);
        assert_eq!(m.deliveries(Status::Delivered, "d0.example"), 1);
    }
}
