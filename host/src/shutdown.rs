//! Waiting for the operator's stop signal.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM handlers. Installed before the node says it is ready,
/// so a supervisor that signals the moment it reads the ready line gets a
/// graceful stop, not the default action (killed, nothing flushed).
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn install() -> anyhow::Result<Self> {
        let handler = |kind| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot install a signal handler: {e}"))
        };
        Ok(Self {
            interrupt: handler(SignalKind::interrupt())?,
            terminate: handler(SignalKind::terminate())?,
        })
    }

    /// Resolves on SIGINT or SIGTERM and says which.
    pub async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
