//! The process shell of the hedwig daemons (mailman, postoffice, worker): what each of them
//! does around its own work, written once.
//!
//! Layout:
//! - [`signal`]: SIGTERM / SIGINT to a `CancellationToken`, the one shutdown signal.
//! - [`ops`]: the [`ops::Shell`] every daemon shares (its Prometheus registry and the
//!   "draining" flag that turns `/health` 503), the `/metrics` answer, and the small
//!   `/health` + `/metrics` listener of mailman and the worker.
//! - [`metrics`]: bounded label values (the sending host) for `prometheus-client` metrics.
//! - [`health_check`]: the client side of `<daemon> health-check` (container health checks; the
//!   images have no curl).
//! - [`logging`]: the tracing subscriber (text or JSON lines on stderr).
//! - [`tls`]: the server certificate and key from PEM files (mailman's STARTTLS, the post
//!   office's HTTPS).
//!
//! Not here: what `/health` says (each daemon knows what makes it healthy: beanstalkd for the
//! post office, the key check and spool for mailman) and the metrics themselves (each daemon's
//! `metrics` module registers its own). A separate crate rather than a module of `hedwig-core`:
//! hedwig-core is the synchronous wire-format library that keygen and the fuzz targets build
//! too, and this shell brings tokio, axum, rustls and prometheus-client with it.

pub mod health_check;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod signal;
pub mod tls;
