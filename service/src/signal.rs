//! The one shutdown signal: SIGTERM (what `docker stop` and systemd send) or SIGINT cancels a
//! `CancellationToken`; every daemon drains from there (stops accepting, finishes or hands
//! back in-flight work, `/health` 503, bounded wait).

use tokio_util::sync::CancellationToken;

/// Returns when the process gets SIGTERM or SIGINT (Ctrl-C).
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT (logged). Returns at once; the waiting
/// runs in a task.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            () = terminated() => tracing::info!("shutdown requested"),
            () = shutdown.cancelled() => {}
        }
        shutdown.cancel();
    });
}
