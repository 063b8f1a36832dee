//! Waiting for the operator's stop signal.

/// Resolves on SIGINT or SIGTERM and says which.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the node can still be killed; wait forever.
        tracing::error!("cannot install signal handlers; stop the node with kill -9");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
