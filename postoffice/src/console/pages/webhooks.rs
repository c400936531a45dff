//! `GET /console/webhooks`: the configured endpoints with their outbox counts (pending,
//! done, failed) and the newest deliveries (of one endpoint and status when chosen), with the
//! last answer or error; `POST /console/webhooks/retry` makes an endpoint's failed or
//! pending deliveries due now (as `postoffice webhooks --retry` and the admin API do).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Html;
use hedwig_ledger::webhook::STATUSES;
use maud::html;

use crate::console::auth::{Fields, Operator};
use crate::console::{view, Console, ConsoleError};

/// Deliveries listed.
const LIMIT: u32 = 100;

async fn render(
    console: &Console,
    operator: &Operator,
    endpoint: Option<&str>,
    status: Option<&str>,
    notice: Option<String>,
) -> Result<Html<String>, ConsoleError> {
    let store = console.store.get().await?;
    let mut counts = store.webhook_counts().await?;
    for name in &console.webhooks {
        if !counts.iter().any(|c| &c.endpoint == name) {
            counts.push(hedwig_ledger::webhook::EndpointCounts {
                endpoint: name.clone(),
                pending: 0,
                done: 0,
                failed: 0,
            });
        }
    }
    counts.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let deliveries = store.webhook_deliveries(endpoint, status, LIMIT).await?;
    let body = html! {
        h1 { "Webhooks" }
        @if let Some(n) = &notice { p.notice { (n) } }
        @if counts.is_empty() {
            p.muted { "No webhook endpoints (the `webhooks:` setting of the post office running the ledger writer)." }
        } @else {
            table.endpoints {
                thead { tr { th { "Endpoint" } th.num { "Pending" } th.num { "Done" } th.num { "Failed" } th { "" } } }
                tbody {
                    @for c in &counts {
                        tr {
                            td { a href={ "/console/webhooks?" (view::query([("endpoint", c.endpoint.as_str())])) } { (c.endpoint) } }
                            td.num { (c.pending) } td.num { (c.done) } td.num { (c.failed) }
                            td {
                                @for s in ["failed", "pending"] {
                                    form.inline method="post" action="/console/webhooks/retry" {
                                        (view::csrf(operator))
                                        input type="hidden" name="endpoint" value=(c.endpoint);
                                        input type="hidden" name="status" value=(s);
                                        button.plain type="submit" { "Retry " (s) " now" }
                                    }
                                    " "
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Newest deliveries" }
        form.search method="get" action="/console/webhooks" {
            label { "Endpoint" input type="text" name="endpoint" value=(endpoint.unwrap_or("")); }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in STATUSES { option value=(s) selected[status == Some(s)] { (s) } }
            } }
            button type="submit" { "Show" }
        }
        @if deliveries.is_empty() {
            p.muted { "No deliveries." }
        } @else {
            table.deliveries {
                thead { tr { th { "First" } th { "Endpoint" } th { "Type" } th { "Message" } th { "Recipient" }
                    th { "Status" } th.num { "Attempts" } th { "Last answer" } th { "Next try" } } }
                tbody {
                    @for d in &deliveries {
                        tr {
                            td { (view::time(d.first_at)) }
                            td { (d.endpoint) }
                            td { (d.event_type) }
                            td { a href=(view::message_link(&d.queue_id)) { (d.queue_id) } }
                            td.wrap { (d.recipient.as_deref().unwrap_or("-")) }
                            td { (view::badge(&d.status)) }
                            td.num { (d.attempts) }
                            td.wrap {
                                @if let Some(code) = d.last_code { "HTTP " (code) " " }
                                (view::cut(d.last_error.as_deref().unwrap_or(""), 300))
                            }
                            td { @if d.status == "pending" { (view::time(d.next_at)) } @else { "-" } }
                        }
                    }
                }
            }
        }
    };
    Ok(view::page(
        operator,
        "Webhooks",
        "/console/webhooks",
        None,
        body,
    ))
}

/// The endpoint and status of a request, checked (`status` one of the outbox's).
fn wanted(pairs: &[(String, String)]) -> Result<(Option<String>, Option<String>), ConsoleError> {
    let mut endpoint = None;
    let mut status = None;
    for (name, value) in pairs {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "endpoint" if value.len() <= 64 => endpoint = Some(value.to_owned()),
            "endpoint" => {
                return Err(ConsoleError::BadInput(
                    name.clone(),
                    "1 to 64 characters".into(),
                ))
            }
            "status" if STATUSES.contains(&value) => status = Some(value.to_owned()),
            "status" => return Err(ConsoleError::BadInput(name.clone(), STATUSES.join(", "))),
            "csrf" => {}
            _ => return Err(ConsoleError::BadInput(name.clone(), "unknown".into())),
        }
    }
    Ok((endpoint, status))
}

/// `GET /console/webhooks`.
pub async fn page(
    State(console): State<Arc<Console>>,
    operator: Operator,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Html<String>, ConsoleError> {
    let (endpoint, status) = wanted(&params)?;
    render(
        &console,
        &operator,
        endpoint.as_deref(),
        status.as_deref(),
        None,
    )
    .await
}

/// `POST /console/webhooks/retry`.
pub async fn retry(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    let (endpoint, status) = wanted(&fields.0)?;
    let status = status.unwrap_or_else(|| "failed".into());
    if status == "done" {
        return Err(ConsoleError::BadInput(
            "status".into(),
            "only failed or pending deliveries are retried".into(),
        ));
    }
    let store = console.store.get().await?;
    let n = store
        .retry_webhooks(endpoint.as_deref(), &status, crate::ledger::now_ms())
        .await?;
    tracing::info!(user = %operator.user, endpoint = endpoint.as_deref().unwrap_or("*"), status = %status, retried = n, "console: webhooks retried");
    let notice = format!(
        "{n} {status} deliveries of {} made due now.",
        endpoint.as_deref().unwrap_or("every endpoint")
    );
    render(&console, &operator, endpoint.as_deref(), None, Some(notice)).await
}
