//! The ledger's admin HTTP API, on its own listener (`ledger.api_listen`), never the intake
//! port. Every request needs `Authorization: Bearer <token>`; the token is compared in
//! constant time (SHA-256 digests of both, folded with xor).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/v1/messages?host=&sender=&recipient=&message_id=&queue_id=&edge_id=&status=&from=&to=&cursor=&limit=` | a page of messages, newest first, with `next` |
//! | `GET /api/v1/messages/{queue_id}` | the timeline (404 when unknown) |
//! | `GET /api/v1/stuck?limit=` | stuck messages, oldest first, and their count |
//! | `GET /api/v1/hosts/{host}/hourly?from=&to=` | counts per hour and outcome (default: the last 24 hours) |
//! | `GET/POST/DELETE /api/v1/suppressions` | the suppression list (`crate::suppression::api`) |
//!
//! 400 names the bad parameter, 401 a missing or wrong token, 503 a store that is down.
//! The JSON is documented in docs/ledger.md.
//!
//! Not here: the queries (`hedwig-ledger`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hedwig_ledger::{Cursor, Filter, MessageStatus, StoreError};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::StoreHandle;

/// Requests served at once.
const MAX_CONCURRENT: usize = 16;

/// What the API's handlers share.
pub struct ApiState {
    pub store: Arc<StoreHandle>,
    pub stuck_after: Duration,
    /// SHA-256 of the token.
    token: [u8; 32],
}

impl ApiState {
    pub fn new(store: Arc<StoreHandle>, stuck_after: Duration, token: &str) -> ApiState {
        ApiState {
            store,
            stuck_after,
            token: Sha256::digest(token.as_bytes()).into(),
        }
    }
}

/// The API router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/messages/{queue_id}", get(message))
        .route("/api/v1/stuck", get(stuck))
        .route("/api/v1/hosts/{host}/hourly", get(hourly))
        .route(
            "/api/v1/suppressions",
            get(crate::suppression::api::list)
                .post(crate::suppression::api::add)
                .delete(crate::suppression::api::remove),
        )
        .merge(crate::webhooks::api::routes())
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        // Searches share the store's few connections: at most this many at once, the rest
        // wait (an operator's tool, not a public service).
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .with_state(state)
}

/// An API failure: the status and a JSON body `{"error": ..., "parameter": ...}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a parameter is bad (its name, why).
    BadParameter(String, String),
    /// 401.
    Unauthorized,
    /// 404.
    NotFound(String),
    /// 503: the store is down.
    Unavailable,
    /// 500: anything else (logged, not shown).
    Internal,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_unavailable() {
            ApiError::Unavailable
        } else {
            tracing::error!(error = %e, "ledger API: store error");
            ApiError::Internal
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadParameter(parameter, why) => (
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("parameter `{parameter}`: {why}"), "parameter": parameter }),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({ "error": "missing or wrong bearer token" }),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, json!({ "error": what })),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "the ledger store is unavailable; try again later" }),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "internal error (see the post office's log)" }),
            ),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

async fn auth(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if token_matches(&state.token, token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Whether `presented` is the token whose digest is `expected`, in time that does not
/// depend on where they differ.
fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    expected
        .iter()
        .zip(digest.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

type Params = Query<Vec<(String, String)>>;

/// Times: Unix milliseconds, or RFC 3339 (`2026-12-02T01:00:00Z`).
fn time(name: &str, value: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            ApiError::BadParameter(
                name.into(),
                "expected Unix milliseconds or an RFC 3339 time".into(),
            )
        })
}

fn limit(value: &str) -> Result<u32, ApiError> {
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::BadParameter(
            "limit".into(),
            format!(
                "expected a number from 1 (at most {} are returned)",
                hedwig_ledger::model::MAX_LIMIT
            ),
        )),
    }
}

/// A text parameter: present, not empty, not overlong.
fn text(name: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() || value.len() > 998 {
        return Err(ApiError::BadParameter(
            name.into(),
            "must be 1 to 998 characters".into(),
        ));
    }
    Ok(value.to_owned())
}

/// The search filter of `GET /api/v1/messages`.
pub fn filter(params: &[(String, String)]) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in params {
        if !seen.insert(name.as_str()) {
            return Err(ApiError::BadParameter(name.clone(), "given twice".into()));
        }
        match name.as_str() {
            "host" => f.host = Some(text(name, value)?),
            "sender" => f.sender = Some(value.clone()), // empty: the null sender
            "recipient" => f.recipient = Some(text(name, value)?),
            "message_id" => f.message_id = Some(text(name, value)?),
            "queue_id" => f.queue_id = Some(text(name, value)?),
            "edge_id" => f.edge_id = Some(text(name, value)?),
            "status" => {
                f.status = Some(MessageStatus::parse(value).ok_or_else(|| {
                    ApiError::BadParameter(
                        name.clone(),
                        "one of queued, held, deferred, sent, bounced, partial".into(),
                    )
                })?)
            }
            "from" => f.from = Some(time(name, value)?),
            "to" => f.to = Some(time(name, value)?),
            "cursor" => {
                f.cursor = Some(value.parse::<Cursor>().map_err(|_| {
                    ApiError::BadParameter(name.clone(), "not a cursor this API gave".into())
                })?)
            }
            "limit" => f.limit = Some(limit(value)?),
            _ => {
                return Err(ApiError::BadParameter(
                    name.clone(),
                    "unknown parameter".into(),
                ))
            }
        }
    }
    Ok(f)
}

async fn messages(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let filter = filter(&params)?;
    let store = state.store.get().await?;
    let page = store.search(&filter).await?;
    Ok(Json(page).into_response())
}

async fn message(
    State(state): State<Arc<ApiState>>,
    Path(queue_id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.get().await?;
    match store.timeline(&queue_id).await? {
        Some(timeline) => Ok(Json(timeline).into_response()),
        None => Err(ApiError::NotFound(format!(
            "the ledger has no message {queue_id:?}"
        ))),
    }
}

async fn stuck(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut n = 100;
    for (name, value) in &params {
        match name.as_str() {
            "limit" => n = limit(value)?.min(hedwig_ledger::model::MAX_LIMIT),
            _ => {
                return Err(ApiError::BadParameter(
                    name.clone(),
                    "unknown parameter".into(),
                ))
            }
        }
    }
    let store = state.store.get().await?;
    let now = super::now_ms();
    let count = store.stuck_count(now, state.stuck_after).await?;
    let messages = store.stuck(now, state.stuck_after, n).await?;
    Ok(Json(json!({
        "count": count,
        "stuck_after_ms": state.stuck_after.as_millis() as u64,
        "messages": messages,
    }))
    .into_response())
}

async fn hourly(
    State(state): State<Arc<ApiState>>,
    Path(host): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let now = super::now_ms();
    let (mut from, mut to) = (now.saturating_sub(24 * 3_600_000), now + 1);
    for (name, value) in &params {
        match name.as_str() {
            "from" => from = time(name, value)?,
            "to" => to = time(name, value)?,
            _ => {
                return Err(ApiError::BadParameter(
                    name.clone(),
                    "unknown parameter".into(),
                ))
            }
        }
    }
    let store = state.store.get().await?;
    let hours = store.hourly(&host, from, to).await?;
    Ok(Json(json!({ "host": host, "hours": hours })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn bad(list: &[(&str, &str)]) -> String {
        match filter(&params(list)) {
            Err(ApiError::BadParameter(name, _)) => name,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn filters_parse_and_bad_parameters_are_named() {
        let f = filter(&params(&[
            ("host", "web1"),
            ("status", "sent"),
            ("from", "2026-12-02T00:00:00Z"),
            ("to", "1800000000000"),
            ("limit", "9999"),
        ]))
        .unwrap();
        assert_eq!(f.host.as_deref(), Some("web1"));
        assert_eq!(f.status, Some(MessageStatus::Sent));
        assert_eq!(f.from, Some(1_796_169_600_000));
        assert_eq!(f.to, Some(1_800_000_000_000));
        assert_eq!(f.page_size(), 500);
        assert_eq!(bad(&[("status", "lost")]), "status");
        assert_eq!(bad(&[("from", "yesterday")]), "from");
        assert_eq!(bad(&[("limit", "0")]), "limit");
        assert_eq!(bad(&[("limit", "-1")]), "limit");
        assert_eq!(bad(&[("cursor", "nonsense")]), "cursor");
        assert_eq!(bad(&[("hots", "x")]), "hots");
        assert_eq!(bad(&[("host", "")]), "host");
        assert_eq!(bad(&[("host", "a"), ("host", "b")]), "host");
    }

    #[test]
    fn tokens_compare_whole() {
        let expected: [u8; 32] = Sha256::digest(b"the-right-token-123").into();
        assert!(token_matches(&expected, "the-right-token-123"));
        assert!(!token_matches(&expected, "the-right-token-12"));
        assert!(!token_matches(&expected, "the-right-token-1234"));
        assert!(!token_matches(&expected, ""));
    }
}
