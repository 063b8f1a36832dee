//! How a call fails and how a process ends: the answers every caller
//! (guests, HTTP, the console, other nodes) gets from the process runtime.

use super::id::StopReason;

/// Why a call or cast failed, as the host sees it. Mirrors the WIT
/// `call-error` (`crate::capabilities` converts it), so the host's own
/// callers (HTTP, console, the cluster) use it too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    #[error("no component named `{0}` is loaded")]
    NoSuchComponent(String),
    #[error("no reply within the timeout")]
    TimedOut,
    #[error("the process crashed: {0}")]
    Crashed(String),
    #[error("refused: {0}")]
    Refused(String),
    /// The process's name moved to another node before it took the message
    /// (the message was not handled). The cluster sends it again to the
    /// name's new node; a caller sees it only if that runs out of time.
    #[error("refused: the process moved to another node before taking the message")]
    Moved,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The node let go of its mailbox: shutdown.
    Shutdown,
    /// Idle past its timeout.
    Expired,
    /// Trapped, ran past its deadline or its memory cap.
    Crashed(String),
    /// Ended because a storage write's outcome was unknown (the cluster
    /// lost its leader or link under it): not the guest's fault, so not a
    /// crash; it restarts from storage at its next message.
    Interrupted(String),
    /// Could not be instantiated, or its `init` failed.
    InitFailed(String),
    /// Never ran: no instance permit came free in time. Not a crash.
    NoPermit(String),
    /// The node stopped it: its name moved, or the node is cut off.
    Stopped(StopReason),
}

impl Exit {
    /// What the caller whose message the process held when it ended is
    /// answered: a crash gives the instance's reason; an interruption says
    /// that the outcome is unknown.
    pub(super) fn held_message_error(&self) -> Option<CallError> {
        match self {
            Exit::Crashed(reason) => Some(CallError::Crashed(reason.clone())),
            Exit::Interrupted(reason) => Some(CallError::Crashed(format!(
                "outcome unknown: {reason}; the process restarts from storage"
            ))),
            _ => None,
        }
    }

    /// What a call that the process will not take is answered, given how
    /// the process ended.
    pub(super) fn refusal(&self) -> CallError {
        match self {
            Exit::Crashed(reason) => CallError::Crashed(format!(
                "the process ended before taking this message: {reason}"
            )),
            Exit::Interrupted(reason) => CallError::Refused(format!(
                "not taken: the process ended before this message ({reason})"
            )),
            Exit::InitFailed(reason) => CallError::Refused(format!("init failed: {reason}")),
            Exit::NoPermit(reason) => CallError::Refused(reason.clone()),
            Exit::Shutdown | Exit::Expired => CallError::Refused("the process stopped".into()),
            Exit::Stopped(StopReason::Moved) => CallError::Moved,
            Exit::Stopped(StopReason::CutOff(reason)) => CallError::Refused(reason.clone()),
            Exit::Stopped(StopReason::Killed) => {
                CallError::Crashed("killed by an operator before taking this message".into())
            }
        }
    }
}
