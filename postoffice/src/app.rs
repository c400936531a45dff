//! The router: `POST /` and `POST /raw` (intake, [`crate::intake::PostForm`]), `POST /check`
//! (key check), `POST /status` (a host's own
//! message's timeline, [`crate::status`]), `GET /health`, `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::server::Conn;
use crate::state::AppState;

/// The post office's HTTP application.
///
/// Concurrency is limited inside the intake (signed and unsigned posts have separate limits)
/// and by the connection caps in [`crate::server`], not by a layer here: a layer would let
/// unsigned requests take the slots signed ones need.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(submit))
        .route(hedwig_core::wire::RAW_ENDPOINT, post(submit_raw))
        .route("/check", post(check))
        .route("/status", post(status))
        .route(
            "/unsubscribe/{token}",
            get(crate::unsubscribe::ask).post(crate::unsubscribe::unsubscribe),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn submit(State(state): State<Arc<AppState>>, request: Request) -> Response {
    intake(state, request, crate::intake::PostForm::Classic).await
}

async fn submit_raw(State(state): State<Arc<AppState>>, request: Request) -> Response {
    intake(state, request, crate::intake::PostForm::Raw).await
}

async fn intake(state: Arc<AppState>, request: Request, form: crate::intake::PostForm) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let conn = request.extensions().get::<Arc<Conn>>().cloned();
    let (parts, body) = request.into_parts();
    let response = match crate::intake::submit(
        &state,
        peer,
        conn.as_ref(),
        &parts.headers,
        body,
        form,
    )
    .await
    {
        Ok(accepted) => (StatusCode::OK, Json(accepted)).into_response(),
        Err(reject) => {
            tracing::warn!(
                client = %peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                host = reject.host.as_deref().unwrap_or("-"),
                message_id = reject.message_id.as_deref().unwrap_or("-"),
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

async fn status(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let conn = request.extensions().get::<Arc<Conn>>().cloned();
    let (parts, body) = request.into_parts();
    let response = match crate::status::status(&state, conn.as_ref(), &parts.headers, body).await {
        Ok(timeline) => Json(timeline).into_response(),
        Err(reject) => {
            tracing::info!(
                host = reject.host.as_deref().unwrap_or("-"),
                id = reject.message_id.as_deref().unwrap_or("-"),
                status = reject.status.as_u16(),
                reason = %reject.message,
                "status request refused"
            );
            reject.into_response()
        }
    };
    state.metrics.status_request(response.status().as_u16());
    response
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.shell.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        )
            .into_response();
    }
    // Healthy while at least one beanstalkd answers: puts fail over to it.
    let probes = state.queue.probe().await;
    let up = probes.iter().filter(|(_, r)| r.is_ok()).count();
    let servers: serde_json::Map<String, serde_json::Value> = probes
        .into_iter()
        .map(|(addr, r)| (addr, r.err().unwrap_or_else(|| "ok".into()).into()))
        .collect();
    if up > 0 {
        Json(serde_json::json!({ "status": "ok", "beanstalkd": servers })).into_response()
    } else {
        let error = servers
            .values()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "queue unavailable", "error": error, "beanstalkd": servers
            })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.shell.metrics_response()
}
