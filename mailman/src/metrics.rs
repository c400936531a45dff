//! Counters for `/metrics` (Prometheus text format) and `/health`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::forward::RetryReason;

/// Every counter mailman keeps. Shared by all tasks.
#[derive(Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_denied: AtomicU64,
    pub connections_over_limit: AtomicU64,
    pub connections_over_client_limit: AtomicU64,
    /// Sessions cut for being too slow: a command line, DATA below `min_data_rate`, or the
    /// whole session over `session_timeout`.
    pub sessions_timed_out: AtomicU64,
    /// `250` given and the postoffice had queued it.
    pub messages_forwarded_inline: AtomicU64,
    /// `250` given, message kept in the spool for the background forwarder.
    pub messages_spooled: AtomicU64,
    /// `5xx` given because the postoffice refused the message.
    pub messages_rejected: AtomicU64,
    /// Refused before spooling: too big, spool full, disk error.
    pub messages_refused: AtomicU64,
    /// Spooled messages the background forwarder got queued.
    pub messages_forwarded_later: AtomicU64,
    /// Spooled messages the postoffice refused for good later (set aside).
    pub messages_set_aside: AtomicU64,
    forward_failures: Mutex<HashMap<&'static str, u64>>,
    /// Set while shutting down: `/health` answers 503.
    pub draining: AtomicBool,
    /// The postoffice refuses our key: the last post or key check got a 401.
    pub wrong_key: AtomicBool,
    /// Unix seconds of the last "key refused" log line (one per `key_check_interval`).
    pub wrong_key_logged: AtomicU64,
}

/// The spool's state, filled in by the forwarder when metrics are read.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpoolState {
    pub depth: u64,
    pub bytes: u64,
    pub oldest_age_seconds: u64,
}

impl Metrics {
    /// Counts one failed post.
    pub fn forward_failed(&self, reason: &RetryReason) {
        if let Ok(mut map) = self.forward_failures.lock() {
            *map.entry(reason.label()).or_default() += 1;
        }
    }

    /// Failed posts with this label.
    pub fn forward_failures(&self, label: &str) -> u64 {
        self.forward_failures
            .lock()
            .map(|m| m.get(label).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, spool: SpoolState) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP mailman_{name} {help}\n# TYPE mailman_{name} {kind}\nmailman_{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        put(
            "connections_total",
            "counter",
            "SMTP connections accepted from allowed clients.",
            get(&self.connections_total),
        );
        put(
            "connections_open",
            "gauge",
            "SMTP connections open now.",
            get(&self.connections_open),
        );
        put(
            "connections_denied_total",
            "counter",
            "Connections refused: client not in allowed_networks.",
            get(&self.connections_denied),
        );
        put(
            "connections_over_limit_total",
            "counter",
            "Connections refused: max_connections reached.",
            get(&self.connections_over_limit),
        );
        put(
            "connections_over_client_limit_total",
            "counter",
            "Connections refused: max_connections_per_client reached for that address.",
            get(&self.connections_over_client_limit),
        );
        put(
            "sessions_timed_out_total",
            "counter",
            "Sessions closed for a timeout (command line, DATA rate, session_timeout).",
            get(&self.sessions_timed_out),
        );
        put(
            "messages_forwarded_inline_total",
            "counter",
            "Messages queued by the postoffice while the client waited.",
            get(&self.messages_forwarded_inline),
        );
        put(
            "messages_spooled_total",
            "counter",
            "Messages accepted and left in the spool for the background forwarder.",
            get(&self.messages_spooled),
        );
        put(
            "messages_rejected_total",
            "counter",
            "Messages the postoffice refused while the client waited (client got 5xx).",
            get(&self.messages_rejected),
        );
        put(
            "messages_refused_total",
            "counter",
            "Messages refused before spooling (size, spool full, disk error).",
            get(&self.messages_refused),
        );
        put(
            "messages_forwarded_later_total",
            "counter",
            "Spooled messages the background forwarder got queued.",
            get(&self.messages_forwarded_later),
        );
        put(
            "messages_set_aside_total",
            "counter",
            "Spooled messages the postoffice refused for good later (moved to rejected/).",
            get(&self.messages_set_aside),
        );
        put(
            "spool_depth",
            "gauge",
            "Messages in the spool.",
            spool.depth,
        );
        put("spool_bytes", "gauge", "Bytes in the spool.", spool.bytes);
        put(
            "spool_oldest_age_seconds",
            "gauge",
            "Age of the oldest spooled message.",
            spool.oldest_age_seconds,
        );
        let _ = writeln!(
            out,
            "# HELP mailman_forward_failures_total Failed posts to the postoffice, by reason.\n\
             # TYPE mailman_forward_failures_total counter"
        );
        for label in RetryReason::LABELS {
            let _ = writeln!(
                out,
                "mailman_forward_failures_total{{reason=\"{label}\"}} {}",
                self.forward_failures(label)
            );
        }
        out
    }
}
