//! `GET /console/failed`: the failed recipients on every beanstalkd server, with the
//! filters of `postoffice failed` (code, recipient domain, host, age, queue id). Requeue and
//! purge go through a confirmation page that says how many recipients match
//! (`POST /console/failed/confirm`), then act (`POST /console/failed/act`) with the same
//! filter through `crate::admin::{requeue, purge}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Html;
use maud::{html, Markup};

use crate::admin::failed::Row;
use crate::admin::filter::{CodePattern, Filter};
use crate::console::auth::{Fields, Operator};
use crate::console::{view, Console, ConsoleError};

/// Most failed records read per server for a page or an action.
const LIMIT: usize = hedwig_queue::scan::DEFAULT_LIMIT;

/// The filter fields: name, label, placeholder.
const FIELDS: &[(&str, &str, &str)] = &[
    ("code", "Code", "550, 5xx, 5.1.1"),
    ("domain", "Recipient domain", "example.org"),
    ("host", "Host", "web1.example.com, web*"),
    ("since", "Failed within", "30m, 1d"),
    ("older_than", "Failed before", "7d"),
    ("id", "Queue id", "01J…"),
];

/// The filter from form or query fields (empty ones ignored; one value each).
fn filter(pairs: &[(String, String)]) -> Result<Filter, ConsoleError> {
    let mut f = Filter::default();
    for (name, value) in pairs {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if value.len() > 253 {
            return Err(ConsoleError::BadInput(
                name.clone(),
                "at most 253 characters".into(),
            ));
        }
        let bad = |why: String| ConsoleError::BadInput(name.clone(), why);
        match name.as_str() {
            "code" => f.codes.push(value.parse::<CodePattern>().map_err(bad)?),
            "domain" => f.domains.push(value.to_lowercase()),
            "host" => f.hosts.push(value.to_lowercase()),
            "since" => {
                f.since = Some(humantime::parse_duration(value).map_err(|e| bad(e.to_string()))?)
            }
            "older_than" => {
                f.older_than =
                    Some(humantime::parse_duration(value).map_err(|e| bad(e.to_string()))?)
            }
            "id" => f.ids.push(value.to_owned()),
            "csrf" | "action" => {}
            _ => return Err(bad("unknown field".into())),
        }
    }
    Ok(f)
}

/// The filter fields as hidden inputs (carried from page to confirmation to action).
fn hidden(pairs: &[(String, String)]) -> Markup {
    html! {
        @for name in FIELDS.iter().map(|f| f.0) {
            @if let Some((_, v)) = pairs.iter().find(|(n, _)| n == name) {
                input type="hidden" name=(name) value=(v);
            }
        }
    }
}

fn rows_table(rows: &[Row]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No failed recipients match." }
        } @else {
            table.failed {
                thead { tr { th { "Failed" } th { "Host" } th { "From" } th { "To" } th { "Reply" } th { "Queue id" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (view::time(r.at * 1000)) }
                            td.wrap { (r.host) }
                            td.wrap { (r.from) }
                            td.wrap { (r.to) }
                            td.wrap { (view::cut(&super::messages::reply(r.code, r.dsn.as_deref(), &r.response), 300)) }
                            td { a href=(view::message_link(&r.queue_id)) { (r.queue_id) } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/failed`.
pub async fn page(
    State(console): State<Arc<Console>>,
    operator: Operator,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Html<String>, ConsoleError> {
    let f = filter(&params)?;
    let report = crate::admin::failed::run(&console.target, &f, LIMIT).await;
    let value = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let body = html! {
        h1 { "Failed" }
        form.search method="get" action="/console/failed" {
            @for (name, label, placeholder) in FIELDS {
                label { (label) input type="text" name=(name) value=(value(name)) placeholder=(placeholder); }
            }
            button type="submit" { "Filter" }
        }
        @for p in &report.problems { p.error { (p) } }
        @if !report.rows.is_empty() {
            form.box method="post" action="/console/failed/confirm" {
                (view::csrf(&operator))
                (hidden(&params))
                (report.rows.len()) " failed recipients match. "
                button type="submit" name="action" value="requeue" { "Requeue…" } " "
                button.danger type="submit" name="action" value="purge" { "Purge…" }
            }
        }
        (rows_table(&report.rows))
    };
    Ok(view::page(
        &operator,
        "Failed",
        "/console/failed",
        None,
        body,
    ))
}

fn action(fields: &Fields) -> Result<&'static str, ConsoleError> {
    match fields.get("action") {
        Some("requeue") => Ok("requeue"),
        Some("purge") => Ok("purge"),
        _ => Err(ConsoleError::BadInput(
            "action".into(),
            "requeue or purge".into(),
        )),
    }
}

/// `POST /console/failed/confirm`: how many recipients the action would take, and the
/// button that does it.
pub async fn confirm(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    let what = action(&fields)?;
    let f = filter(&fields.0)?;
    let report = crate::admin::failed::run(&console.target, &f, LIMIT).await;
    let n = report.rows.len();
    let body = html! {
        h1 { "Confirm: " (what) }
        @for p in &report.problems { p.error { (p) } }
        p.notice id="confirm-count" {
            @if what == "purge" {
                "Delete " (n) " failed recipients for good?"
            } @else {
                "Put " (n) " failed recipients back for delivery?"
            }
        }
        form.box method="post" action="/console/failed/act" {
            (view::csrf(&operator))
            (hidden(&fields.0))
            input type="hidden" name="action" value=(what);
            @if what == "purge" {
                button.danger type="submit" { "Purge " (n) " recipients" }
            } @else {
                button type="submit" { "Requeue " (n) " recipients" }
            }
            " " a href="/console/failed" { "Cancel" }
        }
        (rows_table(&report.rows))
    };
    Ok(view::page(
        &operator,
        "Confirm",
        "/console/failed",
        None,
        body,
    ))
}

/// `POST /console/failed/act`.
pub async fn act(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    let what = action(&fields)?;
    let f = filter(&fields.0)?;
    let mut target = console.target.clone();
    target.operator = Some(operator.user.clone());
    let (rows, problems) = if what == "purge" {
        let args = crate::admin::purge::PurgeArgs {
            filter: f,
            yes: true,
            json: false,
            limit: LIMIT,
        };
        let report = crate::admin::purge::run(&target, &args, None)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "console: purge failed");
                ConsoleError::Internal
            })?;
        (report.rows, report.problems)
    } else {
        let args = crate::admin::requeue::RequeueArgs {
            filter: f,
            dry_run: false,
            json: false,
            limit: LIMIT,
        };
        let report = crate::admin::requeue::run(&target, &args).await;
        (report.rows, report.problems)
    };
    tracing::info!(user = %operator.user, action = what, recipients = rows.len(), problems = problems.len(), "console: failed records {what}d");
    let body = html! {
        h1 { "Failed: " (what) }
        p.notice id="done-count" {
            (rows.len()) " recipients " (if what == "purge" { "purged" } else { "requeued" }) "."
        }
        @for p in &problems { p.error { (p) } }
        (rows_table(&rows))
        p { a href="/console/failed" { "Back to the failed list" } }
    };
    Ok(view::page(
        &operator,
        "Failed",
        "/console/failed",
        None,
        body,
    ))
}
