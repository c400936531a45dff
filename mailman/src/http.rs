//! `GET /health` on the small HTTP port (`http_listen`); `hedwig_service::ops::serve` adds
//! `GET /metrics` and runs the listener.
//!
//! `/health` answers 200 while mailman runs; 503 while it drains after SIGTERM, and while the
//! postoffice refuses our key (a 401 on a post or on the periodic `/check`), so that a wrong
//! key is impossible to miss. The body is a JSON summary (status, spool depth, `wrong_key`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::handoff::Core;
use crate::retry::Waiting;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub core: Arc<Core>,
    pub waiting: Arc<Waiting>,
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
