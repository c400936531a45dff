//! The webhook routes of the ledger's admin API (same listener, same bearer token):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/v1/webhooks` | `{"endpoints": [{"endpoint", "pending", "done", "failed"}...]}` |
//! | `GET /api/v1/webhooks/deliveries?endpoint=&status=&limit=` | `{"deliveries": [Delivery...]}`, newest first |
//! | `POST /api/v1/webhooks/retry?endpoint=&status=failed` | `{"retried": n}` |
//!
//! Not here: the token check and the error shape (`ledger::api`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::ledger::api::{ApiError, ApiState};

/// The routes, to merge into the ledger API's router (inside its auth layer).
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/webhooks", get(list))
        .route("/api/v1/webhooks/deliveries", get(deliveries))
        .route("/api/v1/webhooks/retry", post(retry))
}

type Params = Query<Vec<(String, String)>>;

/// `endpoint`, `status` and `limit`, each at most once; nothing else.
struct Wanted {
    endpoint: Option<String>,
    status: Option<String>,
    limit: u32,
}

fn wanted(params: &[(String, String)], allow_limit: bool) -> Result<Wanted, ApiError> {
    let mut w = Wanted {
        endpoint: None,
        status: None,
        limit: 50,
    };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in params {
        if !seen.insert(name.as_str()) {
            return Err(ApiError::BadParameter(name.clone(), "given twice".into()));
        }
        match name.as_str() {
            "endpoint" if !value.is_empty() && value.len() <= 64 => {
                w.endpoint = Some(value.clone())
            }
            "endpoint" => {
                return Err(ApiError::BadParameter(
                    name.clone(),
                    "1 to 64 characters".into(),
                ))
            }
            "status" => {
                super::cli::check_status(value)
                    .map_err(|why| ApiError::BadParameter(name.clone(), why))?;
                w.status = Some(value.clone());
            }
            "limit" if allow_limit => match value.parse::<u32>() {
                Ok(n) if (1..=hedwig_ledger::model::MAX_LIMIT).contains(&n) => w.limit = n,
                _ => {
                    return Err(ApiError::BadParameter(
                        name.clone(),
                        format!("1 to {}", hedwig_ledger::model::MAX_LIMIT),
                    ))
                }
            },
            _ => return Err(ApiError::BadParameter(name.clone(), "unknown".into())),
        }
    }
    Ok(w)
}

async fn list(State(state): State<Arc<ApiState>>, params: Params) -> Result<Json<Value>, ApiError> {
    if let Some((name, _)) = params.0.first() {
        return Err(ApiError::BadParameter(name.clone(), "unknown".into()));
    }
    let store = state.store.get().await?;
    let counts = store.webhook_counts().await?;
    Ok(Json(json!({ "endpoints": counts })))
}

async fn deliveries(
    State(state): State<Arc<ApiState>>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let w = wanted(&params.0, true)?;
    let store = state.store.get().await?;
    let rows = store
        .webhook_deliveries(w.endpoint.as_deref(), w.status.as_deref(), w.limit)
        .await?;
    Ok(Json(json!({ "deliveries": rows })))
}

async fn retry(
    State(state): State<Arc<ApiState>>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let w = wanted(&params.0, false)?;
    let status = w.status.unwrap_or_else(|| "failed".into());
    if status == "done" {
        return Err(ApiError::BadParameter(
            "status".into(),
            "only failed or pending deliveries are retried".into(),
        ));
    }
    let store = state.store.get().await?;
    let n = store
        .retry_webhooks(w.endpoint.as_deref(), &status, crate::ledger::now_ms())
        .await?;
    tracing::info!(
        endpoint = w.endpoint.as_deref().unwrap_or("*"),
        status,
        retried = n,
        "webhooks: retry now (admin API)"
    );
    Ok(Json(json!({ "retried": n })))
}
