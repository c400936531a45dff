//! `GET /console/hosts`: every sending host of the last 24 hours with its counts (messages
//! queued, recipients sent, deferred, bounced), its bounce rate, when it was last seen, and
//! whether it is held or revoked; `POST /console/hosts/hold` and `/release` act through
//! `crate::admin::hold` on every beanstalkd server.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Html;
use maud::html;

use crate::admin::hold::{HoldArgs, ReleaseArgs};
use crate::console::auth::{Fields, Operator};
use crate::console::{view, Console, ConsoleError};
use crate::ledger::now_ms;

const DAY: u64 = 86_400_000;

#[derive(Default)]
struct Row {
    queued: u64,
    sent: u64,
    deferred: u64,
    bounced: u64,
    last_seen: Option<u64>,
}

async fn render(
    console: &Console,
    operator: &Operator,
    notice: Option<String>,
) -> Result<Html<String>, ConsoleError> {
    let now = now_ms();
    let store = console.store.get().await?;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (host, outcome, count) in store
        .hourly_totals(now.saturating_sub(DAY), now + 1)
        .await?
    {
        let row = rows.entry(host).or_default();
        match outcome.as_str() {
            "queued" => row.queued += count,
            "sent" | "complained" => row.sent += count,
            "deferred" => row.deferred += count,
            "bounced" | "expired" | "failed" => row.bounced += count,
            _ => {}
        }
    }
    for (host, hour) in store.hosts_last_seen().await? {
        rows.entry(host).or_default().last_seen = Some(hour);
    }
    let holds = crate::admin::hold::hold(
        &console.target,
        &HoldArgs {
            host: None,
            json: false,
        },
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "console: cannot read the hold list");
        ConsoleError::Internal
    })?;
    for host in &holds.held {
        rows.entry(host.clone()).or_default();
    }
    let body = html! {
        h1 { "Hosts" }
        @if let Some(n) = &notice { p.notice { (n) } }
        @for p in &holds.problems { p.error { (p) } }
        p.muted { "Counts of the last 24 hours: messages queued, recipients sent, deferred (attempts), bounced." }
        table.hosts {
            thead { tr { th { "Host" } th.num { "Queued" } th.num { "Sent" } th.num { "Deferred" }
                th.num { "Bounced" } th.num { "Bounce rate" } th { "Last seen (hour)" } th { "State" } th { "" } } }
            tbody {
                @for (host, r) in &rows {
                    @let held = holds.held.iter().any(|h| h == host);
                    @let revoked = console.revoked.iter().any(|h| h == host);
                    tr {
                        td.wrap { a href={ "/console/messages?" (view::query([("host", host.as_str())])) } { (host) } }
                        td.num { (r.queued) } td.num { (r.sent) } td.num { (r.deferred) } td.num { (r.bounced) }
                        td.num { (rate(r.bounced, r.sent + r.bounced)) }
                        td { (r.last_seen.map(view::time).unwrap_or_else(|| "-".into())) }
                        td {
                            @if held { span.badge.wait { "held" } " " }
                            @if revoked { span.badge.bad { "revoked" } }
                        }
                        td {
                            form.inline method="post" action=(if held { "/console/hosts/release" } else { "/console/hosts/hold" }) {
                                (view::csrf(operator))
                                input type="hidden" name="host" value=(host);
                                @if held {
                                    button.plain type="submit" { "Release" }
                                } @else {
                                    button.danger type="submit" { "Hold" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Hold a host" }
        form.box method="post" action="/console/hosts/hold" {
            (view::csrf(operator))
            label { "Host (fqdn)" input type="text" name="host" required; }
            button.danger type="submit" { "Hold" }
        }
    };
    Ok(view::page(operator, "Hosts", "/console/hosts", None, body))
}

fn rate(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// `GET /console/hosts`.
pub async fn page(
    State(console): State<Arc<Console>>,
    operator: Operator,
) -> Result<Html<String>, ConsoleError> {
    render(&console, &operator, None).await
}

/// The console's admin target, acting as `operator` (named in the ledger's events).
fn acting(console: &Console, operator: &Operator) -> crate::admin::Target {
    let mut target = console.target.clone();
    target.operator = Some(operator.user.clone());
    target
}

/// `POST /console/hosts/hold`.
pub async fn hold(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    let host = fields.required("host", 253)?;
    let target = acting(&console, &operator);
    let report = crate::admin::hold::hold(
        &target,
        &HoldArgs {
            host: Some(host.clone()),
            json: false,
        },
    )
    .await
    .map_err(|e| ConsoleError::BadInput("host".into(), e.to_string()))?;
    tracing::info!(user = %operator.user, host = %host, problems = report.problems.len(), "console: host held");
    render(&console, &operator, Some(report.message.trim().to_owned())).await
}

/// `POST /console/hosts/release`: the host leaves the hold list and its held jobs go back
/// at once; a second sweep runs in the background after the hold cache's time, for mail a
/// post office or worker with a stale list held meanwhile (as `postoffice release`).
pub async fn release(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    let host = fields.required("host", 253)?;
    let target = acting(&console, &operator);
    let args = ReleaseArgs {
        host: host.clone(),
        settle: std::time::Duration::ZERO,
        limit: hedwig_queue::scan::DEFAULT_LIMIT,
        json: false,
    };
    let report = crate::admin::hold::release(&target, &args)
        .await
        .map_err(|e| ConsoleError::BadInput("host".into(), e.to_string()))?;
    tracing::info!(user = %operator.user, host = %host, moved = report.moved, "console: host released");
    if let Ok(normalized) = hedwig_core::key::normalize_fqdn(&host) {
        tokio::spawn(async move {
            tokio::time::sleep(hedwig_queue::hold::CACHE_FOR + std::time::Duration::from_secs(1))
                .await;
            let mut later = crate::admin::hold::Report::default();
            crate::admin::hold::sweep(&target, &normalized, args.limit, &mut later).await;
            if later.moved > 0 {
                tracing::info!(host = %normalized, moved = later.moved, "console: release's second sweep moved more held jobs");
            }
        });
    }
    render(&console, &operator, Some(report.message.trim().to_owned())).await
}
