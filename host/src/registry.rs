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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::capabilities::CallError;
use crate::mailbox::Message;
use crate::process::{Pid, ProcessMailbox as Mailbox, ProcessStats};
use crate::trace::Tracer;

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
    /// An operator killed it (`kill NAME`): it ends as if it crashed, and
    /// its next message starts it again, as a supervisor restarts a child.
    Killed,
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
    pub stats: Arc<ProcessStats>,
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
}

impl Registration {
    /// Tells the process to stop before its next message, and wakes it.
    fn stop(&self, reason: StopReason) {
        if self.stop.0.set(reason).is_ok() {
            let _ = self.mailbox.wake(Message::Stop);
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
    /// Traces set on names: a process started under a traced name is
    /// traced from its first message (a trace outlives restarts).
    traces: HashMap<ProcessKey, Arc<Tracer>>,
}

impl Registry {
    pub fn new(max_processes: u32) -> Self {
        Self {
            max_processes: usize::try_from(max_processes).unwrap_or(usize::MAX),
            inner: Mutex::new(Inner {
                open: true,
                processes: HashMap::new(),
                traces: HashMap::new(),
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
        // Most nodes trace nothing: no hashing of the name then.
        if !inner.traces.is_empty()
            && let Some(tracer) = inner.traces.get(key)
        {
            if tracer.is_finished() {
                inner.traces.remove(key);
            } else {
                registration.stats.trace.store(Some(tracer.clone()));
            }
        }
        let mailbox = registration.mailbox.clone();
        inner.processes.insert(key.clone(), registration);
        Ok(mailbox)
    }

    /// Traces the process holding `key`, and those that hold it after it,
    /// until the tracer is finished. One trace per name: a name already
    /// traced is refused (two consoles would each miss half the messages).
    pub fn trace(&self, key: &ProcessKey, tracer: Arc<Tracer>) -> Result<(), String> {
        let mut inner = self.lock();
        inner.traces.retain(|_, tracer| !tracer.is_finished());
        if inner.traces.contains_key(key) {
            return Err(format!(
                "`{key}` is already traced (by another console or the observer): \
                 wait for that trace to end"
            ));
        }
        if let Some(registration) = inner.processes.get(key) {
            registration.stats.trace.store(Some(tracer.clone()));
        }
        inner.traces.insert(key.clone(), tracer);
        Ok(())
    }

    /// Ends `tracer`'s trace of `key` (and only that trace).
    pub fn untrace(&self, key: &ProcessKey, tracer: &Arc<Tracer>) {
        let mut inner = self.lock();
        if inner
            .traces
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, tracer))
        {
            inner.traces.remove(key);
        }
        if let Some(registration) = inner.processes.get(key) {
            registration.stats.trace.rcu(|current| match current {
                Some(current) if Arc::ptr_eq(current, tracer) => None,
                other => other.clone(),
            });
        }
    }

    /// Tells the process holding `key` to end after its current message,
    /// as if it crashed (`kill`). It keeps the name until it has ended, so
    /// no second process of the name runs meanwhile; messages that reach it
    /// before then are refused. Returns whether one was running.
    pub fn kill(&self, key: &ProcessKey) -> bool {
        let inner = self.lock();
        match inner.processes.get(key) {
            Some(registration) => {
                registration.stop(StopReason::Killed);
                true
            }
            None => false,
        }
    }

    /// Traces of processes not yet over.
    pub fn traces_running(&self) -> usize {
        self.lock()
            .traces
            .values()
            .filter(|tracer| !tracer.is_finished())
            .count()
    }

    /// The mailbox of the live process holding `key`, if any (never starts
    /// one).
    pub fn mailbox_of(&self, key: &ProcessKey) -> Option<Mailbox> {
        self.lock()
            .processes
            .get(key)
            .map(|registration| registration.mailbox.clone())
    }

    /// Every live process, as the console shows it. Only reference counts
    /// are taken under the lock every call and cast goes through; the rows
    /// are built after it is released.
    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        let live: Vec<(ProcessKey, Pid, Mailbox, Arc<ProcessStats>)> = {
            let inner = self.lock();
            inner
                .processes
                .iter()
                .map(|(key, registration)| {
                    (
                        key.clone(),
                        registration.pid,
                        registration.mailbox.clone(),
                        registration.stats.clone(),
                    )
                })
                .collect()
        };
        live.into_iter()
            .map(|(key, pid, mailbox, stats)| {
                let (queued_messages, queued_bytes) = mailbox.queued();
                ProcessInfo {
                    component: key.component.to_string(),
                    name: key.name.to_string(),
                    pid,
                    started: stats.started,
                    messages: stats.messages.load(Ordering::Relaxed),
                    memory: stats.memory.load(Ordering::Relaxed),
                    queued_messages,
                    queued_bytes,
                    traced: stats.trace.load().is_some(),
                }
            })
            .collect()
    }

    /// Runs `release` under the registry's lock and, if it releases the
    /// process (closes its mailbox), removes `key` if process `pid` still
    /// holds it. A process that ends this way is gone from the registry the
    /// moment its mailbox refuses messages, so no sender meets a closed
    /// mailbox under a live name.
    pub fn unregister_if<T>(
        &self,
        key: &ProcessKey,
        pid: Pid,
        release: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        let mut inner = self.lock();
        let released = release()?;
        if inner.processes.get(key).is_some_and(|r| r.pid == pid) {
            inner.processes.remove(key);
        }
        Some(released)
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
        // Outside the lock: a hibernated process ends where it sleeps, and
        // that unregisters it.
        for registration in drained {
            registration.mailbox.close();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
