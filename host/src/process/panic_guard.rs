//! Who runs a process, kept outside the code that runs it. Should host code
//! panic half-way (a host bug: wasmtime turns what guests do into errors,
//! never panics), the process ends as crashed, its name freed and what
//! waits in its mailbox answered, instead of staying marked as running
//! while its callers wait out their timeouts.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use super::code::Code;
use super::error::{CallError, Exit};
use super::id::{Pid, ProcessKey};
use super::processes::Processes;
use super::resting::{Identity, ProcessInbox, ProcessMailbox};
use super::task::refuse;

pub(super) struct Owner<C: Code> {
    pub processes: Arc<Processes<C>>,
    pub key: ProcessKey,
    pub pid: Pid,
    pub mailbox: ProcessMailbox<C>,
}

impl<C: Code> Owner<C> {
    pub fn of(identity: &Identity<C>, inbox: &ProcessInbox<C>) -> Self {
        Self {
            processes: identity.processes.clone(),
            key: identity.key.clone(),
            pid: identity.pid,
            mailbox: inbox.mailbox(),
        }
    }

    /// Runs `work` as a task of the node's processes; if it panics, ends
    /// the process.
    pub fn spawn(self, work: impl Future<Output = ()> + Send + 'static) {
        let tasks = self.processes.tasks.clone();
        tasks.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
                self.abandon(panic.as_ref());
            }
        });
    }

    /// Ends the process whose runner panicked with `panic`, and returns
    /// what its caller gets.
    pub fn abandon(self, panic: &(dyn Any + Send)) -> CallError {
        let what = panic
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let Owner {
            processes,
            key,
            pid,
            mailbox,
        } = self;
        tracing::error!(process = %key, pid, "host code panicked while running the process, which ends as crashed: {what}");
        let reason = format!("the host failed while running it (a host bug: {what})");
        // A process that came to rest or ended before the panic is not
        // this runner's any more.
        if let Some(abandoned) = mailbox.abandon() {
            processes.exited(&key, pid, &Exit::Crashed(reason.clone()));
            processes.registry.unregister(&key, pid);
            // Answered once the name is free: what its caller does next
            // meets a fresh process.
            if let Some(caller) = abandoned.in_flight {
                let _ = caller.send(Err(CallError::Crashed(reason.clone())));
            }
            for message in abandoned.queued {
                refuse(message, &reason);
            }
        }
        CallError::Crashed(reason)
    }
}
