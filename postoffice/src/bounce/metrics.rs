//! The bounce listener's metrics, on the post office's `/metrics` (prefix
//! `hedwig_postoffice_bounce_`). Every label value is one of a fixed set named here, never
//! text a client chose.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Cheap to clone (shared counters).
#[derive(Clone, Default)]
pub struct BounceMetrics {
    /// Sessions by how they ended: `quit` (or closed by the session, e.g. after too many
    /// errors), `disconnected`, `timeout`, `too_slow` (below `min_data_rate`),
    /// `session_timeout`, `tls_failed`, `io_error`, `shutdown`, and connections refused at a
    /// cap before a session: `refused_max_connections`, `refused_per_client`.
    pub sessions: Family<OutcomeLabel, Counter>,
    /// Messages (after DATA) by result: `bounce_recorded`, `complaint_recorded`,
    /// `nothing_to_record` (e.g. a `delayed` DSN), `deferred` (451: the events tube could not
    /// take it), `refused_unknown_token`, `refused_not_a_report`, `refused_bad_report`.
    pub messages: Family<ResultLabel, Counter>,
    /// `RCPT TO` refused: not a valid token of ours for a bounce domain.
    pub recipients_refused: Counter,
    /// STARTTLS handshakes that succeeded.
    pub starttls: Counter,
}

impl BounceMetrics {
    /// Registers the metrics in `registry` (the post office's, already prefixed).
    pub fn register(registry: &mut Registry) -> BounceMetrics {
        let m = BounceMetrics::default();
        registry.register(
            "bounce_sessions",
            "Bounce listener sessions by outcome: quit, disconnected, timeout, too_slow, \
             session_timeout, tls_failed, io_error, shutdown, refused_max_connections, \
             refused_per_client",
            m.sessions.clone(),
        );
        registry.register(
            "bounce_messages",
            "Messages received by the bounce listener by result: bounce_recorded, \
             complaint_recorded, nothing_to_record, deferred, refused_unknown_token, \
             refused_not_a_report, refused_bad_report",
            m.messages.clone(),
        );
        registry.register(
            "bounce_recipients_refused",
            "RCPT TO refused by the bounce listener: not a valid token for a bounce domain",
            m.recipients_refused.clone(),
        );
        registry.register(
            "bounce_starttls",
            "STARTTLS handshakes completed on the bounce listener",
            m.starttls.clone(),
        );
        m
    }

    pub fn session(&self, outcome: &'static str) {
        self.sessions.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn message(&self, result: &'static str) {
        self.messages.get_or_create(&ResultLabel { result }).inc();
    }
}
