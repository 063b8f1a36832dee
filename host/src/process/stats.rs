//! What a process counts about itself, and how the console and the
//! observer see a live process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::id::{Pid, ProcessKey};
use super::trace::{EventKind, TraceHook};

/// A process's counters, kept while it lives (through hibernation).
/// Updated with relaxed atomics on the message path; read by `ps`.
pub struct ProcessStats {
    pub started: SystemTime,
    /// Messages handled.
    pub messages: AtomicU64,
    /// Linear memory, in bytes (kept by the store's limiter); while it
    /// hibernates, the bytes of its handed-over state.
    pub memory: Arc<AtomicUsize>,
    /// The trace on this process, if any: one atomic load per message when
    /// there is none.
    pub trace: TraceHook,
    /// The version of its component's code it runs (changed by a swap).
    version: Mutex<Arc<str>>,
}

impl Default for ProcessStats {
    fn default() -> Self {
        Self::running(&Arc::from(""))
    }
}

impl ProcessStats {
    /// The counters of a process starting on code of version `version`.
    pub fn running(version: &Arc<str>) -> Self {
        Self {
            started: SystemTime::now(),
            messages: AtomicU64::new(0),
            memory: Arc::new(AtomicUsize::new(0)),
            trace: TraceHook::empty(),
            version: Mutex::new(version.clone()),
        }
    }

    /// The version the process runs now.
    pub fn version(&self) -> Arc<str> {
        self.version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_version(&self, version: &Arc<str>) {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version.clone();
    }

    pub(super) fn counted(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers a message of process `key` (`pid`) to its trace, if it has
    /// one.
    pub(super) fn traced(&self, key: &ProcessKey, pid: Pid, kind: EventKind, message: &[u8]) {
        let trace = self.trace.load();
        if let Some(tracer) = trace.as_ref()
            && !tracer.offer(key, pid, kind, message)
        {
            // Only this tracer: a newer one may have been set meanwhile.
            let _ = self.trace.compare_and_swap(&trace, None);
        }
    }

    /// The process as the console shows it; `queued` is its mailbox's
    /// messages and bytes.
    pub(super) fn info(&self, key: &ProcessKey, pid: Pid, queued: (usize, usize)) -> ProcessInfo {
        ProcessInfo {
            component: key.component.to_string(),
            name: key.name.to_string(),
            pid,
            started: self.started,
            messages: self.messages.load(Ordering::Relaxed),
            memory: self.memory.load(Ordering::Relaxed),
            queued_messages: queued.0,
            queued_bytes: queued.1,
            traced: self.trace.load().is_some(),
            version: self.version().to_string(),
        }
    }
}

/// A live process as the console and the observer see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub component: String,
    pub name: String,
    pub pid: Pid,
    pub started: SystemTime,
    /// Messages it has handled.
    pub messages: u64,
    /// Its linear memory, in bytes.
    pub memory: usize,
    /// Messages and bytes waiting in its mailbox.
    pub queued_messages: usize,
    pub queued_bytes: usize,
    pub traced: bool,
    /// The version of its component's code it runs.
    pub version: String,
}
