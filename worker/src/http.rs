//! `GET /health` and `GET /metrics` on a small HTTP port.
//!
//! `/health` answers 200 `ok` while the worker takes jobs and 503 `draining` once shutdown has
//! begun; `/metrics` is the Prometheus text of [`Metrics`]. [`health_check`] is the client side
//! for `worker health-check` (Docker's HEALTHCHECK; the image has no curl).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Debug, Default)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins.
    pub draining: AtomicBool,
}

/// The router (tests call it without a socket).
pub fn app(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Asks `GET /health` at `listen` (an unspecified address means this host); `Ok` on 200.
pub async fn health_check(listen: SocketAddr) -> Result<(), String> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        (&mut stream).take(4096).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| format!("{addr}: no answer within 5s"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let status_line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line).trim().to_string();
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("{addr}: {status_line}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(state: &Arc<HttpState>, path: &str) -> (StatusCode, String) {
        let res = app(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_and_metrics() {
        let state = Arc::new(HttpState::default());
        state.metrics.incr(crate::metrics::Counter::Bounce);
        assert_eq!(
            get(&state, "/health").await,
            (StatusCode::OK, "ok\n".into())
        );
        let (status, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("hedwig_worker_bounces_total 1"), "{body}");
        state.draining.store(true, Ordering::Relaxed);
        assert_eq!(
            get(&state, "/health").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn health_check_over_a_socket() {
        let state = Arc::new(HttpState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(state.clone());
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        assert_eq!(health_check(addr).await, Ok(()));
        state.draining.store(true, Ordering::Relaxed);
        let err = health_check(addr).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
        server.abort();
        assert!(health_check("127.0.0.1:1".parse().unwrap()).await.is_err());
    }
}
