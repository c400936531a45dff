//! `GET /health` and `GET /metrics` on a small HTTP port.
//!
//! `/health` answers 200 while mailman runs; 503 while it drains after SIGTERM, and while the
//! postoffice refuses our key (a 401 on a post or on the periodic `/check`), so that a wrong
//! key is impossible to miss. The body is a JSON summary (status, spool depth, `wrong_key`).
//! `/metrics` is the Prometheus text format.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::deliver::Core;
use crate::forwarder::Waiting;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub core: Arc<Core>,
    pub waiting: Arc<Waiting>,
}

/// The router; tests call it without a socket.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    let draining = s.core.metrics.draining.load(Ordering::Relaxed);
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

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let spool = s.waiting.state(s.core.spool.used());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.core.metrics.render(spool),
    )
}
