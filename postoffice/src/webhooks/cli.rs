//! `postoffice webhooks`: the endpoints with their counts, recent deliveries with their
//! status codes, and `retry` (failed or pending rows due now), read from and written to the
//! ledger store the config names.
//!
//! Not here: the queries (`hedwig_ledger::webhook`).

use std::fmt::Write as _;

use hedwig_ledger::webhook::{Delivery, EndpointCounts, STATUSES};

use super::WebhookConfig;
use crate::ledger::cli::when;

/// `postoffice webhooks [COMMAND]`.
#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: Option<WebhooksCommand>,
}

/// What `postoffice webhooks` does (default: `list`).
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// The configured endpoints with their pending, done and failed counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The newest deliveries: event, type, status, attempts, last HTTP status or error.
    Deliveries {
        /// Only this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only `pending`, `done` or `failed`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Send failed (or, with --status pending, waiting) deliveries now, with a fresh max_age.
    Retry {
        /// Only this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, default_value = "failed")]
        status: String,
    },
}

/// Checks a `status` argument.
pub fn check_status(status: &str) -> Result<(), String> {
    if STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "unknown status {status:?}; expected one of {}",
            STATUSES.join(", ")
        ))
    }
}

/// The endpoints table: every configured endpoint (with zero counts when it has no rows),
/// then endpoints that have rows but are no longer configured.
pub fn render_list(configured: &[WebhookConfig], counts: &[EndpointCounts]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>8} {:>8}  url",
        "endpoint", "pending", "done", "failed"
    );
    let zero = |name: &str| EndpointCounts {
        endpoint: name.to_owned(),
        pending: 0,
        done: 0,
        failed: 0,
    };
    for w in configured {
        let c = counts
            .iter()
            .find(|c| c.endpoint == w.name)
            .cloned()
            .unwrap_or_else(|| zero(&w.name));
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>8} {:>8}  {}",
            c.endpoint, c.pending, c.done, c.failed, w.url
        );
    }
    for c in counts
        .iter()
        .filter(|c| !configured.iter().any(|w| w.name == c.endpoint))
    {
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>8} {:>8}  (not configured)",
            c.endpoint, c.pending, c.done, c.failed
        );
    }
    out
}

/// The deliveries table.
pub fn render_deliveries(rows: &[Delivery]) -> String {
    let mut out = String::new();
    for d in rows {
        let last = match (d.last_code, &d.last_error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "-".into(),
        };
        let _ = writeln!(
            out,
            "{}  {:<12} {:<10} {:<7} tries {:<3} {}  queue {} {}  last {}{}",
            when(d.first_at),
            d.endpoint,
            d.event_type,
            d.status,
            d.attempts,
            d.event_id,
            d.queue_id,
            d.recipient.as_deref().unwrap_or(""),
            last,
            match d.status.as_str() {
                "pending" => format!("  next {}", when(d.next_at)),
                _ => String::new(),
            }
        );
    }
    out
}
