//! `GET /console/messages` (search, paginated with the store's cursor),
//! `GET /console/messages/{queue_id}` (the whole timeline: recipients with their last
//! replies, every event), and `GET /console/messages/{queue_id}/queue` (the message where it
//! is queued now: envelope and headers, the body only with `console.show_bodies`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use hedwig_ledger::{Message, MessageStatus};
use hedwig_queue::event::What;
use maud::{html, Markup};

use crate::console::auth::Operator;
use crate::console::view::{self, badge, message_link};
use crate::console::{Console, ConsoleError};
use crate::ledger::api::ApiError;

/// The search fields, in form order: name, label, placeholder.
const FIELDS: &[(&str, &str, &str)] = &[
    ("host", "Host", "web1.example.com"),
    ("sender", "Sender", "app@example.com"),
    ("recipient", "Recipient", "bob@example.org"),
    ("message_id", "Message-ID", "x@web1.example.com"),
    ("queue_id", "Queue id", "01J…"),
];

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> ConsoleError {
        match e {
            ApiError::BadParameter(name, why) => ConsoleError::BadInput(name, why),
            ApiError::NotFound(what) => ConsoleError::NotFound(what),
            ApiError::Unavailable => ConsoleError::Unavailable,
            ApiError::Unauthorized | ApiError::Internal => ConsoleError::Internal,
        }
    }
}

/// The search's parameters as typed: empty fields dropped, form times turned into
/// milliseconds (the API's filter parses the rest and names a bad one).
fn search_params(params: &[(String, String)]) -> Result<Vec<(String, String)>, ConsoleError> {
    let mut out = Vec::new();
    for (name, value) in params {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let value = match name.as_str() {
            "from" | "to" => view::parse_time(value)
                .ok_or_else(|| {
                    ConsoleError::BadInput(name.clone(), "expected a time (UTC)".into())
                })?
                .to_string(),
            _ => value.to_owned(),
        };
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// `GET /console/messages`.
pub async fn list(
    State(console): State<Arc<Console>>,
    operator: Operator,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Html<String>, ConsoleError> {
    let given = search_params(&params)?;
    let filter = crate::ledger::api::filter(&given)?;
    let store = console.store.get().await?;
    let page = store.search(&filter).await?;
    let value = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let next = page.next.as_ref().map(|cursor| {
        let cursor = cursor.to_string();
        let mut pairs: Vec<(&str, &str)> = given
            .iter()
            .filter(|(n, _)| n != "cursor")
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        pairs.push(("cursor", &cursor));
        format!("/console/messages?{}", view::query(pairs))
    });
    let body = html! {
        h1 { "Messages" }
        form.search method="get" action="/console/messages" {
            @for (name, label, placeholder) in FIELDS {
                label { (label) input type="text" name=(name) value=(value(name)) placeholder=(placeholder); }
            }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in MessageStatus::ALL {
                        option value=(s.as_str()) selected[value("status") == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Queued from (UTC)" input type="datetime-local" name="from" value=(value("from")); }
            label { "Queued before (UTC)" input type="datetime-local" name="to" value=(value("to")); }
            button type="submit" { "Search" }
        }
        (table(&page.messages))
        @if let Some(next) = next {
            p.pager { a href=(next) { "Older messages →" } }
        }
    };
    Ok(view::page(
        &operator,
        "Messages",
        "/console/messages",
        None,
        body,
    ))
}

/// A table of messages, newest first.
pub fn table(messages: &[Message]) -> Markup {
    html! {
        @if messages.is_empty() {
            p.muted { "No messages." }
        } @else {
            table.messages {
                thead { tr {
                    th { "Queued" } th { "Host" } th { "Sender" } th { "Subject" }
                    th.num { "Rcpts" } th { "Status" } th { "Queue id" }
                } }
                tbody {
                    @for m in messages {
                        tr {
                            td { (view::time(m.queued_at)) }
                            td.wrap { (m.host.as_deref().unwrap_or("-")) }
                            td.wrap { (sender(m.sender.as_deref())) }
                            td.wrap { (view::cut(m.subject.as_deref().unwrap_or(""), 120)) }
                            td.num { (m.recipients) }
                            td { (badge(m.status.as_str())) }
                            td { a href=(message_link(&m.queue_id)) { (m.queue_id) } }
                        }
                    }
                }
            }
        }
    }
}

fn sender(s: Option<&str>) -> String {
    match s {
        Some("") => "<> (null sender)".into(),
        Some(s) => s.to_owned(),
        None => "-".into(),
    }
}

/// `GET /console/messages/{queue_id}`.
pub async fn show(
    State(console): State<Arc<Console>>,
    operator: Operator,
    Path(queue_id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    if queue_id.is_empty() || queue_id.len() > 200 {
        return Err(ConsoleError::BadInput(
            "queue id".into(),
            "1 to 200 characters".into(),
        ));
    }
    let store = console.store.get().await?;
    let Some(t) = store.timeline(&queue_id).await? else {
        return Err(ConsoleError::NotFound(format!(
            "the ledger has no message {queue_id:?}"
        )));
    };
    let m = &t.message;
    let what = if console.settings.show_bodies {
        "headers and body"
    } else {
        "headers"
    };
    let body = html! {
        h1 { "Message " (m.queue_id) " " (badge(m.status.as_str())) }
        dl.facts {
            dt { "Subject" } dd { (m.subject.as_deref().unwrap_or("-")) }
            dt { "Host" } dd { (m.host.as_deref().unwrap_or("-")) }
            dt { "Sender" } dd { (sender(m.sender.as_deref())) }
            dt { "Message-ID" } dd { (m.message_id.as_deref().unwrap_or("-")) }
            dt { "Queued" } dd { (view::time(m.queued_at)) }
            dt { "Size" } dd { (m.size.map(|s| format!("{s} bytes")).unwrap_or_else(|| "-".into())) }
            dt { "Kind" } dd {
                (m.kind)
                @if let Some(of) = &m.bounce_of {
                    " of " a href=(message_link(of)) { (of) }
                }
            }
            dt { "Client" } dd {
                (m.edge_client.as_deref().unwrap_or("-")) " via mailman id "
                (m.edge_id.as_deref().unwrap_or("-")) ", posted from "
                (m.post_client.as_deref().unwrap_or("-"))
            }
            dt { "Header fix-ups" } dd {
                @if m.fixups.is_empty() { "-" } @else { (m.fixups.join(", ")) }
            }
            dt { "Expires" } dd { (m.expires_at.map(|e| view::time(e * 1000)).unwrap_or_else(|| "-".into())) }
            dt { "Finished" } dd { (m.final_at.map(view::time).unwrap_or_else(|| "not yet".into())) }
        }
        p { a href={ (message_link(&m.queue_id)) "/queue" } { "Look for it in the queue (" (what) ")" } }
        h2 { "Recipients" }
        table {
            thead { tr { th { "Recipient" } th { "Status" } th.num { "Attempts" } th { "MX" } th { "Last reply" } th { "Updated" } } }
            tbody {
                @for r in &t.recipients {
                    tr {
                        td.wrap { (r.recipient) }
                        td { (badge(&r.status)) }
                        td.num { (r.attempts) }
                        td.wrap { (r.mx.as_deref().unwrap_or("-")) }
                        td.wrap { (reply(r.code, r.dsn.as_deref(), r.reply.as_deref().unwrap_or(""))) }
                        td { (view::time(r.updated_at)) }
                    }
                }
            }
        }
        h2 { "Timeline" }
        table.timeline {
            thead { tr { th { "Time" } th { "Event" } th { "Details" } } }
            tbody {
                @for e in &t.events {
                    tr {
                        td { (view::time(e.at)) }
                        @match &e.what {
                            What::Queued(q) => {
                                td { (badge("queued")) }
                                td.wrap {
                                    "by " (q.host) " from " (sender(Some(&q.sender))) " to "
                                    (q.recipients.join(", ")) " (" (q.size) " bytes"
                                    @if q.held { ", held" }
                                    ")"
                                }
                            }
                            What::Recipient(r) => {
                                td { (badge(r.outcome.as_str())) }
                                td.wrap {
                                    (r.recipient)
                                    @if let Some(mx) = &r.mx { " at " (mx) }
                                    @if let Some(ip) = &r.ip { " [" (ip) "]" }
                                    @if r.tls == Some(true) { " TLS" }
                                    @if let Some(n) = r.attempt { ", attempt " (n) }
                                    @if let Some(by) = &r.by { ", by " (by) }
                                    br;
                                    span.muted { (reply(r.code, r.dsn.as_deref(), &r.reply)) }
                                }
                            }
                            What::BounceQueued { bounce_queue_id, recipients } => {
                                td { (badge("bounce")) }
                                td.wrap {
                                    "bounce " a href=(message_link(bounce_queue_id)) { (bounce_queue_id) }
                                    " for " (recipients.join(", "))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(view::page(
        &operator,
        &format!("Message {}", m.queue_id),
        "/console/messages",
        None,
        body,
    ))
}

/// A remote reply with its codes, as text.
pub(crate) fn reply(code: Option<u16>, dsn: Option<&str>, reply: &str) -> String {
    // Workers record the reply as the server sent it, codes first; add them only when the
    // text does not start with them.
    let mut out = String::new();
    if let Some(c) = code.filter(|c| !reply.starts_with(&c.to_string())) {
        out.push_str(&format!("{c} "));
        if let Some(d) = dsn.filter(|d| !reply.contains(d)) {
            out.push_str(d);
            out.push(' ');
        }
    }
    out.push_str(reply);
    view::cut(out.trim(), 2000)
}

/// Most body bytes shown.
const MAX_BODY: usize = 256 * 1024;

/// `GET /console/messages/{queue_id}/queue`.
pub async fn queued(
    State(console): State<Arc<Console>>,
    operator: Operator,
    Path(queue_id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    if queue_id.is_empty() || queue_id.len() > 200 {
        return Err(ConsoleError::BadInput(
            "queue id".into(),
            "1 to 200 characters".into(),
        ));
    }
    let args = crate::admin::show::ShowArgs {
        id: queue_id.clone(),
        scan: 10_000,
        json: false,
        body: if console.settings.show_bodies {
            MAX_BODY
        } else {
            0
        },
    };
    let report = crate::admin::show::run(&console.target, &args).await;
    tracing::info!(user = %operator.user, queue_id = %queue_id, found = report.found.len(), "console: looked into the queue");
    let body = html! {
        h1 { "In the queue: " a href=(message_link(&queue_id)) { (queue_id) } }
        @for p in &report.problems { p.error { (p) } }
        @if report.found.is_empty() {
            p.muted { "Not in any tube now (delivered, purged, or older than the newest 10,000 jobs)." }
        }
        @for f in &report.found {
            h2 { (f.tube) " (" (f.state) "), job " (f.job) " on " (f.server) }
            dl.facts {
                dt { "Host" } dd { (f.envelope.host) }
                dt { "From" } dd { "<" (f.envelope.mail_from) ">" }
                dt { "To" } dd { (f.envelope.rcpt_to.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")) }
                @if let Some(fail) = &f.envelope.failure {
                    dt { "Failed" } dd { (reply(fail.code, fail.dsn.as_deref(), &fail.response)) }
                }
            }
            h2 { "Headers" }
            pre { (f.headers) }
            @if let Some(b) = &f.body {
                h2 { "Body" }
                pre { (b) }
            }
        }
    };
    Ok(view::page(
        &operator,
        "In the queue",
        "/console/messages",
        None,
        body,
    ))
}
