//! The router: `POST /` (intake), `POST /check` (key check), `GET /health`, `GET /metrics`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::state::AppState;

/// The post office's HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.config.max_concurrent_requests;
    Router::new()
        .route("/", post(submit))
        .route("/check", post(check))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(tower::limit::ConcurrencyLimitLayer::new(limit))
        .with_state(state)
}

async fn submit(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = request.into_parts();
    let response = match crate::intake::submit(&state, peer, &parts.headers, body).await {
        Ok(accepted) => (StatusCode::OK, Json(accepted)).into_response(),
        Err(reject) => {
            tracing::warn!(
                client = %peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                status = reject.status.as_u16(),
                reason = %reject.message,
                outcome = "rejected",
                "post refused"
            );
            reject.into_response()
        }
    };
    state.metrics.status(response.status().as_u16());
    response
}

async fn check(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match crate::intake::check(&state, &parts.headers, body).await {
        Ok(fqdn) => Json(serde_json::json!({ "ok": true, "fqdn": fqdn })).into_response(),
        Err(reject) => reject.into_response(),
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        )
            .into_response();
    }
    let probe = async {
        let mut client = state.pool.get().await?;
        client.list_tube_used().await
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Ok(Err(e)) => unhealthy(e.to_string()),
        Err(_) => unhealthy("beanstalkd did not answer within 2s".into()),
    }
}

fn unhealthy(why: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "queue unavailable", "error": why })),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
