//! `GET /health` on the small HTTP port (`http_listen`); `hedwig_service::ops::serve` adds
//! `GET /metrics` and runs the listener.
//!
//! `/health` answers 200 while mailman runs; 503 while it drains after SIGTERM, and while the
//! postoffice refuses our key (a 401 on a post or on the periodic `/check`), so that a wrong
//! key is impossible to miss. The body is a JSON summary (status, spool depth, `wrong_key`).
//!
//! `GET /status/<id>` (issue 14): the post office's timeline of this host's message `<id>`
//! (mailman's message id or the `Message-ID:`), asked with the host key
//! ([`crate::status`]); the post office's status (403 another host's, 404 unknown, 503 ledger
//! down) and `{"error": ...}`, or 502 when no post office answered. At most
//! [`STATUS_CONCURRENT`] at once, more get 503. This listener is for the host's containers
//! (docker0), never the public: whoever reaches it sees this host's messages.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::handoff::Core;
use crate::retry::Waiting;
use crate::status::Answer;

/// Status requests forwarded to the post office at once.
pub const STATUS_CONCURRENT: usize = 8;
/// Longest wait for one post office's answer to a status request.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub core: Arc<Core>,
    pub waiting: Arc<Waiting>,
    /// [`STATUS_CONCURRENT`] slots for `GET /status/<id>`.
    pub status_slots: Arc<tokio::sync::Semaphore>,
}

impl HttpState {
    /// Copies the spool's state into the spool gauges (before each `/metrics` answer).
    pub fn set_spool_gauges(&self) {
        self.core
            .metrics
            .set_spool(self.waiting.state(self.core.spool.used()));
    }
}

/// The `/health` router; tests call it without a socket.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status/{*id}", get(status))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    let draining = s.core.shell.draining();
    let wrong_key = s.core.metrics.wrong_key.load(Ordering::Relaxed);
    let spool = s.waiting.state(s.core.spool.used());
    let body = serde_json::json!({
        "status": if draining {
            "draining"
        } else if wrong_key {
            "wrong_key: the postoffice refuses this host's key (401); check fqdn and key"
        } else {
            "ok"
        },
        "spool_waiting": spool.depth,
        "spool_bytes": spool.bytes,
        "spool_oldest_age_seconds": spool.oldest_age_seconds,
        "wrong_key": wrong_key,
    });
    let status = if draining || wrong_key {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body))
}

async fn status(State(s): State<HttpState>, Path(id): Path<String>) -> impl IntoResponse {
    let error = |status: StatusCode, error: String| {
        (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
    };
    let Ok(_slot) = s.status_slots.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many status requests in progress; retry later".into(),
        );
    };
    let answer = s.core.poster.status(&id, STATUS_TIMEOUT).await;
    let code = StatusCode::from_u16(answer.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    match answer {
        Answer::Timeline(timeline) => (code, axum::Json(timeline)).into_response(),
        Answer::Refused { error: why, .. } | Answer::Failed(why) => error(code, why),
    }
}
