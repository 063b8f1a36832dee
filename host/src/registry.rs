//! The registry: which process holds a name.
//!
//! A name is `component/process-name`, and is meant to be cluster-wide: the
//! registry answers "where does this name live" with a mailbox, and today
//! every mailbox is local. Distribution adds remote entries here (a mailbox
//! that forwards to a peer node), so callers never learn where a process runs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::capabilities::CallError;
use crate::mailbox::Mailbox;
use crate::process::Pid;

/// The cluster-wide name of a process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub component: Arc<str>,
    pub name: Arc<str>,
}

impl ProcessKey {
    pub fn new(component: &str, name: &str) -> Self {
        Self {
            component: Arc::from(component),
            name: Arc::from(name),
        }
    }
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.component, self.name)
    }
}

/// A registered process: its id and where to send it messages.
pub struct Registration {
    pub pid: Pid,
    pub mailbox: Mailbox,
}

pub struct Registry {
    max_processes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    open: bool,
    processes: HashMap<ProcessKey, Registration>,
}

impl Registry {
    pub fn new(max_processes: u32) -> Self {
        Self {
            max_processes: usize::try_from(max_processes).unwrap_or(usize::MAX),
            inner: Mutex::new(Inner {
                open: true,
                processes: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is one insert or remove), so a poisoned lock is safe
        // to keep using.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The mailbox of the process holding `key`, or of a new one made by
    /// `start`. Concurrent first callers share one process: `start` runs
    /// under the registry's lock, and only does a channel and a task spawn.
    pub fn lookup_or_start(
        &self,
        key: &ProcessKey,
        start: impl FnOnce() -> Result<Registration, CallError>,
    ) -> Result<Mailbox, CallError> {
        let mut inner = self.lock();
        if let Some(registration) = inner.processes.get(key) {
            return Ok(registration.mailbox.clone());
        }
        if !inner.open {
            return Err(CallError::Refused("the node is shutting down".into()));
        }
        if inner.processes.len() >= self.max_processes {
            return Err(CallError::Refused(format!(
                "the node is at its limit of {} processes",
                self.max_processes
            )));
        }
        let registration = start()?;
        let mailbox = registration.mailbox.clone();
        inner.processes.insert(key.clone(), registration);
        Ok(mailbox)
    }

    /// Removes `key` if process `pid` still holds it (a newer process may
    /// have taken the name since).
    pub fn unregister(&self, key: &ProcessKey, pid: Pid) {
        let mut inner = self.lock();
        if inner.processes.get(key).is_some_and(|r| r.pid == pid) {
            inner.processes.remove(key);
        }
    }

    /// Refuses new processes from now on and lets go of every mailbox, so
    /// each process finishes what is queued and stops.
    pub fn close(&self) {
        let drained: Vec<Registration> = {
            let mut inner = self.lock();
            inner.open = false;
            inner.processes.drain().map(|(_, r)| r).collect()
        };
        drop(drained);
    }

    pub fn len(&self) -> usize {
        self.lock().processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
