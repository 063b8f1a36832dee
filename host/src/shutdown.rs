//! Waiting for the operator's stop signal.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM handlers. Installed before the node says it is ready,
/// so a supervisor that signals the moment it reads the ready line gets a
/// graceful stop, not the default action (killed, nothing flushed).
pub struct StopSignals {
    interrupt: Signal,
    /// False when the terminal's Ctrl-C belongs to a console (`start_iex`):
    /// there it stops a trace, or leaves the console, never the node (the
    /// handler stays installed, so SIGINT's default action cannot kill the
    /// node without a graceful stop).
    interrupt_stops: bool,
    terminate: Signal,
}

impl StopSignals {
    pub fn install() -> anyhow::Result<Self> {
        Self::install_with(true)
    }

    /// SIGTERM only, or SIGINT too.
    pub fn install_with(interrupt: bool) -> anyhow::Result<Self> {
        let handler = |kind| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot install a signal handler: {e}"))
        };
        Ok(Self {
            interrupt: handler(SignalKind::interrupt())?,
            interrupt_stops: interrupt,
            terminate: handler(SignalKind::terminate())?,
        })
    }

    /// Resolves on SIGINT or SIGTERM and says which.
    pub async fn recv(self) -> &'static str {
        let Self {
            mut interrupt,
            interrupt_stops,
            mut terminate,
        } = self;
        let interrupt = async {
            loop {
                interrupt.recv().await;
                if interrupt_stops {
                    return;
                }
            }
        };
        tokio::select! {
            _ = interrupt => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    }
}
