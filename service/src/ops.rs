//! What every daemon's `/health` and `/metrics` read, and the listener that serves them.
//!
//! [`Shell`] holds the daemon's Prometheus registry (its metrics are registered once, at
//! start, by the daemon's `metrics` module) and the draining flag: set when the shutdown token
//! is cancelled ([`Shell::drain_on`]), after which `/health` answers 503 so load balancers and
//! orchestrators stop sending while in-flight work finishes. [`serve`] runs the daemon's own
//! `/health` route plus `/metrics` on a listener of its own (mailman's and the worker's
//! `http_listen`); the post office serves the same two routes on its intake port through its
//! own connection layer, with [`Shell::metrics_response`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The content type of [`Shell::render`]: the OpenMetrics text format.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A daemon's registry and draining flag; shared (`Arc`) by its tasks and handlers.
pub struct Shell {
    registry: Registry,
    draining: AtomicBool,
}

impl Shell {
    /// The shell around a registry whose metrics are all registered.
    pub fn new(registry: Registry) -> Shell {
        Shell {
            registry,
            draining: AtomicBool::new(false),
        }
    }

    /// True once shutdown has begun: `/health` must answer 503.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the daemon as draining (see [`Shell::drain_on`]).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Sets the draining flag as soon as `shutdown` is cancelled.
    pub fn drain_on(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let shell = self.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            shell.start_draining();
        })
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The `GET /metrics` answer.
    pub fn metrics_response(&self) -> Response {
        (
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            self.render(),
        )
            .into_response()
    }
}

/// Serves `health` (a router with the daemon's `/health` route, its state applied) and
/// `GET /metrics` from `shell` on `listener` until `stop` is cancelled; `before_scrape` runs
/// before each `/metrics` answer (to set gauges read from elsewhere, such as a spool's depth).
pub fn serve(
    listener: TcpListener,
    health: Router,
    shell: Arc<Shell>,
    before_scrape: impl Fn() + Clone + Send + Sync + 'static,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let app = health.route(
        "/metrics",
        get(move || async move {
            before_scrape();
            shell.metrics_response()
        }),
    );
    tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!("http server: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    #[tokio::test]
    async fn draining_follows_the_token_and_metrics_render() {
        let mut registry = Registry::with_prefix("t");
        let c = Counter::<u64>::default();
        registry.register("things", "Things", c.clone());
        c.inc();
        let shell = Arc::new(Shell::new(registry));
        let token = CancellationToken::new();
        let task = shell.drain_on(token.clone());
        assert!(!shell.draining());
        token.cancel();
        task.await.unwrap();
        assert!(shell.draining());
        assert!(
            shell.render().contains("t_things_total 1\n"),
            "{}",
            shell.render()
        );

        let res = shell.metrics_response();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], METRICS_CONTENT_TYPE);
    }

    #[tokio::test]
    async fn serve_routes_health_and_metrics() {
        let shell = Arc::new(Shell::new(Registry::with_prefix("t")));
        let listener = TcpListener::bind("127.0.170.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Router::new().route("/health", get(|| async { "ok\n" }));
        let scraped = Arc::new(AtomicBool::new(false));
        let hook = {
            let scraped = scraped.clone();
            move || scraped.store(true, Ordering::Relaxed)
        };
        let stop = CancellationToken::new();
        let task = serve(listener, health.clone(), shell.clone(), hook, stop.clone());
        let answer = crate::health_check::get(&format!("http://{addr}"))
            .await
            .unwrap();
        assert!(answer.healthy);
        assert_eq!(answer.body, "ok\n");
        // The same router without a socket.
        let res = health
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(stream);
        assert!(!scraped.load(Ordering::Relaxed));
        let text = raw_get(addr, "/metrics").await;
        assert!(text.contains("# EOF"), "{text}");
        assert!(scraped.load(Ordering::Relaxed));
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the listener stops")
            .unwrap();
    }

    async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
