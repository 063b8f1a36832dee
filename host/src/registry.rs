//! The registry: which local process holds a name.
//!
//! A name is `component/process-name`, and is cluster-wide: in a cluster,
//! the placement (`crate::cluster::placement`) says which node's registry
//! holds it, and every registration there carries the [`Fence`] it was made
//! under. A registration whose fence is no longer current (its slot moved
//! away and maybe back) is stopped and replaced, never used; the cluster
//! also stops registrations itself when their slot moves or the node is cut
//! off ([`Registry::stop_where`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

use crate::capabilities::CallError;
use crate::mailbox::{Mailbox, Message};
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

/// Which registration of a name a process is, in a cluster: the slot of
/// its name, the node that held the slot, and the log index at which that
/// node got it. The cluster applies a process's writes only while its fence
/// is current, so two processes of one name never both write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub slot: u16,
    pub node: u64,
    pub epoch: u64,
}

/// Why a process was told to stop by the node (not by its own doing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Its name is now held by another registration: waiting calls are
    /// answered `Moved`, so their callers send them again, to the new one.
    Moved,
    /// The node is cut off from the cluster's majority.
    CutOff(String),
}

/// Set once to make a process stop before its next message.
#[derive(Default)]
pub struct StopFlag(OnceLock<StopReason>);

impl StopFlag {
    pub fn reason(&self) -> Option<&StopReason> {
        self.0.get()
    }
}

/// A registered process: its id and where to send it messages.
pub struct Registration {
    pub pid: Pid,
    pub mailbox: Mailbox,
    pub fence: Option<Fence>,
    pub stop: Arc<StopFlag>,
}

impl Registration {
    /// Tells the process to stop before its next message, and wakes it.
    fn stop(&self, reason: StopReason) {
        if self.stop.0.set(reason).is_ok() {
            self.mailbox.wake(Message::Stop);
        }
    }
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

    /// The mailbox of the process holding `key` under `fence`, or of a new
    /// one made by `start`. Concurrent first callers share one process:
    /// `start` runs under the registry's lock, and only does a channel and a
    /// task spawn. A process registered under another fence is stopped and
    /// replaced.
    pub fn lookup_or_start(
        &self,
        key: &ProcessKey,
        fence: Option<Fence>,
        start: impl FnOnce() -> Result<Registration, CallError>,
    ) -> Result<Mailbox, CallError> {
        let mut inner = self.lock();
        if let Some(registration) = inner.processes.get(key) {
            if registration.fence == fence {
                return Ok(registration.mailbox.clone());
            }
            if let Some(stale) = inner.processes.remove(key) {
                stale.stop(StopReason::Moved);
            }
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

    /// Stops every process whose registration matches, for `reason`, and
    /// forgets them (their names are free at once). Returns how many.
    pub fn stop_where(
        &self,
        reason: &StopReason,
        matches: impl Fn(&ProcessKey, Option<&Fence>) -> bool,
    ) -> usize {
        let stopped: Vec<Registration> = {
            let mut inner = self.lock();
            let keys: Vec<ProcessKey> = inner
                .processes
                .iter()
                .filter(|(key, registration)| matches(key, registration.fence.as_ref()))
                .map(|(key, _)| key.clone())
                .collect();
            keys.iter()
                .filter_map(|key| inner.processes.remove(key))
                .collect()
        };
        for registration in &stopped {
            registration.stop(reason.clone());
        }
        stopped.len()
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
