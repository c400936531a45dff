//! `POST /status`: a sending host asks for the ledger's timeline of one of its own messages
//! (issue 14, "Status on the sending host"). mailman forwards its local `GET /status/<id>`
//! and `mailman status <id>` here.
//!
//! The request is signed with the host key exactly as a post is ([`hedwig_core::signing`],
//! endpoint `/status`); the body is `{"id": "<id>"}`, so the signature (over the body's
//! digest) covers the id. Unsigned requests are refused: the key never travels for this.
//! `<id>` is mailman's message id (the ledger's `edge_id`) or the `Message-ID:` (with or
//! without angle brackets). Answers:
//!
//! | status | when |
//! | --- | --- |
//! | 200 | the timeline (docs/ledger.md, `GET /api/v1/messages/{queue_id}`) of the newest of the host's messages with that id |
//! | 400 | no id, an id longer than [`MAX_ID`] or with control characters, a body that is not `{"id": ...}` |
//! | 401 | unsigned, or a wrong signature, date or body (as a post) |
//! | 403 | the id is only another host's (nothing else about it is said), or the host is revoked |
//! | 404 | no message with that id |
//! | 429 | the host asked more than `status_rate_per_minute` times a minute (its own bucket; other hosts and its posts are not affected) |
//! | 501 | this post office reads no ledger (`ledger.writer` off and no `ledger.url`) |
//! | 503 | the store is down or slow, or [`MAX_CONCURRENT`] status requests are in progress |
//!
//! Not here: the queries (`hedwig-ledger`), the admin API (operators, every host: [`crate::ledger::api`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use hedwig_ledger::{Filter, Timeline};

use crate::body::Budget;
use crate::error::Reject;
use crate::intake::{authenticate_signed, signed_headers};
use crate::server::Conn;
use crate::state::AppState;

/// Longest id asked for (RFC 5322 §2.1.1: a header line is at most 998 characters).
pub const MAX_ID: usize = 998;
/// Status requests handled at once; more are refused at once with 503 (they share the
/// store's few connections with the writer).
pub const MAX_CONCURRENT: usize = 16;
/// Largest body: `{"id": ...}` with room for JSON escaping.
const BODY_LIMIT: usize = 8 * 1024;
/// Longest wait for the store (opening it included).
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages per id looked at: a Message-ID an app reuses may name several.
const CANDIDATES: u32 = 50;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    id: String,
}

/// Checks an id: not empty, at most [`MAX_ID`] bytes, no control characters.
pub fn check_id(id: &str) -> Result<&str, String> {
    let id = id.trim();
    if id.is_empty() {
        return Err("id is empty".into());
    }
    if id.len() > MAX_ID {
        return Err(format!("id is {} bytes; at most {MAX_ID}", id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err("id has control characters".into());
    }
    Ok(id)
}

/// Handles one status request: the signing host's timeline of `id`.
pub async fn status(
    state: &Arc<AppState>,
    conn: Option<&Arc<Conn>>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Timeline, Reject> {
    let Some(signed) = signed_headers(headers)? else {
        return Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "status requests must be signed with the host key",
        ));
    };
    let fqdn = authenticate_signed(state, &signed, "/status")
        .map_err(|r| r.about(signed.host.clone(), None))?;
    if let Some(conn) = conn {
        conn.authenticated();
    }
    if state.policies.is_revoked(&fqdn) {
        return Err(Reject::new(StatusCode::FORBIDDEN, "host revoked").about(fqdn, None));
    }
    if let Err(retry_after) = state.policies.take_status(&fqdn) {
        return Err(Reject::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many status requests from this host (status_rate_per_minute); retry in {}s",
                retry_after.as_secs()
            ),
        )
        .about(fqdn, None));
    }
    let _slot = state
        .status_requests
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many status requests in progress; retry later",
            )
        })?;
    let body = crate::body::read(
        headers,
        body,
        BODY_LIMIT,
        state.config.request_timeout,
        Budget::Authenticated {
            total: &state.bytes_in_flight,
        },
    )
    .await
    .map_err(|r| r.about(fqdn.clone(), None))?;
    if hedwig_core::signing::content_digest(&body.bytes) != signed.digest {
        return Err(Reject::unauthorized().about(fqdn, None));
    }
    let ask: Ask = serde_json::from_slice(&body.bytes)
        .map_err(|_| Reject::bad_request("expected a JSON body {\"id\": \"...\"}"))?;
    let id = check_id(&ask.id)
        .map_err(|why| Reject::bad_request(why).about(fqdn.clone(), None))?
        .to_owned();
    let Some(store) = state.ledger.as_ref() else {
        return Err(Reject::new(
            StatusCode::NOT_IMPLEMENTED,
            "this post office reads no delivery ledger (ledger.writer is off and ledger.url \
             is not set)",
        ));
    };
    match tokio::time::timeout(STORE_TIMEOUT, lookup(store, &fqdn, &id)).await {
        Ok(Ok(Some(timeline))) => Ok(timeline),
        Ok(Ok(None)) => Err(Reject::new(
            StatusCode::NOT_FOUND,
            format!("no message with id {id:?}"),
        )),
        Ok(Err(Lookup::Foreign)) => Err(Reject::new(
            StatusCode::FORBIDDEN,
            format!("message {id:?} was not sent by this host"),
        )
        .about(fqdn, Some(id))),
        Ok(Err(Lookup::Store(e))) => {
            if !e.is_unavailable() {
                tracing::error!(error = %e, "status request: ledger store error");
            }
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

fn unavailable() -> Reject {
    Reject::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the delivery ledger is unavailable; try again later",
    )
}

enum Lookup {
    /// Messages with the id exist, none of them this host's.
    Foreign,
    Store(hedwig_ledger::StoreError),
}

impl From<hedwig_ledger::StoreError> for Lookup {
    fn from(e: hedwig_ledger::StoreError) -> Lookup {
        Lookup::Store(e)
    }
}

/// The newest message of `host` whose mailman id or Message-ID is `id`.
async fn lookup(
    handle: &crate::ledger::StoreHandle,
    host: &str,
    id: &str,
) -> Result<Option<Timeline>, Lookup> {
    let store = handle.get().await?;
    let mut found = Vec::new();
    for filter in [
        Filter {
            edge_id: Some(id.to_owned()),
            limit: Some(CANDIDATES),
            ..Default::default()
        },
        Filter {
            message_id: Some(id.to_owned()),
            limit: Some(CANDIDATES),
            ..Default::default()
        },
    ] {
        // A message whose `queued` event has not arrived has no host yet: not counted.
        found.extend(
            store
                .search(&filter)
                .await?
                .messages
                .into_iter()
                .filter(|m| m.host.is_some()),
        );
    }
    let own = found
        .iter()
        .filter(|m| m.host.as_deref() == Some(host))
        .max_by(|a, b| (a.queued_at, &a.queue_id).cmp(&(b.queued_at, &b.queue_id)));
    match own {
        Some(m) => Ok(store.timeline(&m.queue_id).await?),
        None if found.is_empty() => Ok(None),
        None => Err(Lookup::Foreign),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert_eq!(check_id(" m-1 "), Ok("m-1"));
        assert_eq!(check_id("<a@b>"), Ok("<a@b>"));
        assert!(check_id("").is_err());
        assert!(check_id("   ").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(MAX_ID)).is_ok());
        assert!(check_id(&"x".repeat(MAX_ID + 1)).is_err());
    }
}
