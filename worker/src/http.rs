//! `GET /health` on the small HTTP port (`http_listen`); `hedwig_service::ops::serve` adds
//! `GET /metrics` and runs the listener, and `hedwig_service::health_check` is the client side
//! of `worker health-check`.
//!
//! `/health` answers 200 `ok` while the worker takes jobs and 503 `draining` once shutdown has
//! begun.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hedwig_service::ops::Shell;

/// The `/health` router (tests call it without a socket).
pub fn app(shell: Arc<Shell>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(shell)
}

async fn health(State(shell): State<Arc<Shell>>) -> impl IntoResponse {
    if shell.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MessageCounter, Metrics};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn health_and_metrics_over_a_socket() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry, Default::default());
        metrics.count(MessageCounter::Bounce, "web1.example.net");
        let shell = Arc::new(Shell::new(registry));
        let listener = tokio::net::TcpListener::bind("127.0.170.1:0")
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let server = hedwig_service::ops::serve(
            listener,
            app(shell.clone()),
            shell.clone(),
            || {},
            stop.clone(),
        );
        let health = hedwig_service::health_check::get(&url).await.unwrap();
        assert!(health.healthy);
        assert_eq!(health.body, "ok\n");
        let body = reqwest_free_get(&url, "/metrics").await;
        assert!(
            body.contains("hedwig_worker_bounces_total{host=\"other\"} 1"),
            "{body}"
        );
        shell.start_draining();
        let health = hedwig_service::health_check::get(&url).await.unwrap();
        assert!(!health.healthy);
        assert_eq!(health.body, "draining\n");
        stop.cancel();
        server.await.unwrap();
    }

    async fn reqwest_free_get(url: &str, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
