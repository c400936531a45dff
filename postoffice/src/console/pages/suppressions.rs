//! `GET /console/suppressions`: search the suppression list (recipient, scope, list,
//! source); `POST /console/suppressions/add` and `/remove` (one entry: recipient, scope and
//! list; removing a scope's entry leaves its lists' entries). The checks are the admin
//! API's (`crate::suppression::api`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Html;
use hedwig_ledger::suppress::{ListMatch, Source, SuppressionFilter};
use maud::html;

use crate::console::auth::{Fields, Operator};
use crate::console::{view, Console, ConsoleError};
use crate::ledger::api::ApiError;
use crate::ledger::now_ms;
use crate::suppression::api::{check_list, check_recipient, check_scope};

async fn render(
    console: &Console,
    operator: &Operator,
    params: &[(String, String)],
    notice: Option<String>,
) -> Result<Html<String>, ConsoleError> {
    let mut filter = SuppressionFilter {
        limit: Some(200),
        ..SuppressionFilter::default()
    };
    let value = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    };
    let bad = |name: &str, why: String| ConsoleError::BadInput(name.into(), why);
    if !value("recipient").is_empty() {
        filter.recipient =
            Some(check_recipient(value("recipient")).map_err(|e| bad("recipient", e))?);
    }
    if !value("scope").is_empty() {
        filter.scope = Some(check_scope(value("scope")).map_err(|e| bad("scope", e))?);
    }
    if !value("list").is_empty() {
        filter.list = check_list(value("list")).map_err(|e| bad("list", e))?;
    }
    if !value("source").is_empty() {
        filter.source = Some(
            Source::parse(value("source"))
                .ok_or_else(|| bad("source", "auto, operator or complaint".into()))?,
        );
    }
    let store = console.store.get().await?;
    let entries = store.list_suppressions(&filter, now_ms(), false).await?;
    let body = html! {
        h1 { "Suppression" }
        @if let Some(n) = &notice { p.notice { (n) } }
        form.search method="get" action="/console/suppressions" {
            label { "Recipient" input type="text" name="recipient" value=(value("recipient")); }
            label { "Scope (sender domain or *)" input type="text" name="scope" value=(value("scope")); }
            label { "List (List-Id, or none)" input type="text" name="list" value=(value("list")); }
            label { "Source" select name="source" {
                option value="" { "any" }
                @for s in ["auto", "operator", "complaint"] {
                    option value=(s) selected[value("source") == s] { (s) }
                }
            } }
            button type="submit" { "Search" }
        }
        @if entries.is_empty() {
            p.muted { "No entries." }
        } @else {
            table.suppressions {
                thead { tr { th { "Recipient" } th { "Scope" } th { "List" } th { "Reason" } th { "Source" }
                    th { "Reply" } th { "Added" } th { "Expires" } th { "" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td.wrap { (e.recipient) }
                            td { (e.scope) }
                            td.wrap { (e.list_id.as_deref().unwrap_or("")) }
                            td.wrap { (e.reason) }
                            td { (e.source.as_str()) }
                            td.wrap { (view::cut(e.reply.as_deref().unwrap_or(""), 300)) }
                            td { (view::time(e.created_at)) }
                            td { (e.expires_at.map(view::time).unwrap_or_else(|| "never".into())) }
                            td {
                                form.inline method="post" action="/console/suppressions/remove" {
                                    (view::csrf(operator))
                                    input type="hidden" name="recipient" value=(e.recipient);
                                    input type="hidden" name="scope" value=(e.scope);
                                    input type="hidden" name="list" value=(e.list_id.as_deref().unwrap_or("none"));
                                    button.plain type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add an entry" }
        form.search method="post" action="/console/suppressions/add" {
            (view::csrf(operator))
            label { "Recipient" input type="text" name="recipient" required; }
            label { "Scope (sender domain or *)" input type="text" name="scope" value="*"; }
            label { "List (List-Id; empty: all of the scope's mail)" input type="text" name="list"; }
            label { "Reason" input type="text" name="reason" placeholder="added by an operator"; }
            label { "Expires after (empty: never)" input type="text" name="expires" placeholder="30d"; }
            button type="submit" { "Add" }
        }
    };
    Ok(view::page(
        operator,
        "Suppression",
        "/console/suppressions",
        None,
        body,
    ))
}

/// `GET /console/suppressions`.
pub async fn page(
    State(console): State<Arc<Console>>,
    operator: Operator,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Html<String>, ConsoleError> {
    render(&console, &operator, &params, None).await
}

/// `POST /console/suppressions/add`.
pub async fn add(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    // The API's checks, from the same fields as JSON.
    let mut json = serde_json::Map::new();
    for (field, name) in [
        ("recipient", "recipient"),
        ("scope", "scope"),
        ("list", "list_id"),
        ("reason", "reason"),
        ("expires", "expires"),
    ] {
        if let Some(v) = fields.get(field).map(str::trim).filter(|v| !v.is_empty()) {
            json.insert(name.into(), serde_json::Value::String(v.to_owned()));
        }
    }
    if !json.contains_key("reason") {
        json.insert(
            "reason".into(),
            serde_json::Value::String(format!("added by {} in the console", operator.user)),
        );
    }
    let bytes = serde_json::to_vec(&json).map_err(|_| ConsoleError::Internal)?;
    let mut entry = crate::suppression::api::entry(&bytes, now_ms()).map_err(|e| match e {
        ApiError::BadParameter(name, why) if name == "list_id" => {
            ConsoleError::BadInput("list".into(), why)
        }
        ApiError::BadParameter(name, why) => ConsoleError::BadInput(name, why),
        _ => ConsoleError::Internal,
    })?;
    entry.recipient = hedwig_ledger::suppress::normalize(&entry.recipient);
    let store = console.store.get().await?;
    store.add_suppression(&entry).await?;
    tracing::info!(
        user = %operator.user, recipient = %entry.recipient, scope = %entry.scope,
        list_id = entry.list_id.as_deref(), "console: suppression added"
    );
    let notice = match &entry.list_id {
        Some(list) => format!(
            "{} suppressed (scope {}, list {list}).",
            entry.recipient, entry.scope
        ),
        None => format!("{} suppressed (scope {}).", entry.recipient, entry.scope),
    };
    render(&console, &operator, &[], Some(notice)).await
}

/// `POST /console/suppressions/remove`.
pub async fn remove(
    State(console): State<Arc<Console>>,
    operator: Operator,
    body: Bytes,
) -> Result<Html<String>, ConsoleError> {
    let fields = Fields::checked(&operator, &body)?;
    let recipient = check_recipient(&fields.required("recipient", 320)?)
        .map_err(|e| ConsoleError::BadInput("recipient".into(), e))?;
    let scope = check_scope(&fields.required("scope", 253)?)
        .map_err(|e| ConsoleError::BadInput("scope".into(), e))?;
    // One entry: a scope's own (`none`, or no field) leaves the entries of its lists.
    let list = match fields.get("list").map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => check_list(v).map_err(|e| ConsoleError::BadInput("list".into(), e))?,
        None => ListMatch::Whole,
    };
    let filter = SuppressionFilter {
        recipient: Some(recipient.clone()),
        scope: Some(scope.clone()),
        list: list.clone(),
        ..SuppressionFilter::default()
    };
    let store = console.store.get().await?;
    let removed = store.remove_suppressions(&filter).await?;
    let list = match &list {
        ListMatch::Id(id) => format!(", list {id}"),
        _ => String::new(),
    };
    tracing::info!(user = %operator.user, recipient = %recipient, scope = %scope, list = %list, removed, "console: suppression removed");
    let notice = format!("{removed} entries removed for {recipient} (scope {scope}{list}).");
    render(&console, &operator, &[], Some(notice)).await
}
