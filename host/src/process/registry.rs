//! The registry: which local process holds a name.
//!
//! A name is `component/process-name`, and is cluster-wide: in a cluster,
//! the placement (`crate::cluster::placement`) says which node's registry
//! holds it, and every registration there carries the [`Fence`] it was made
//! under. A registration whose fence is no longer current (its slot moved
//! away and maybe back) is stopped and replaced, never used; the cluster
//! also stops registrations itself when their slot moves or the node is cut
//! off ([`Registry::stop_where`]).
//!
//! It knows processes only by their mailboxes (generic over what rests in
//! them), so it is built and tested without any instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::CallError;
use super::id::{Fence, Pid, ProcessKey, StopFlag, StopReason};
use super::mailbox::{Mailbox, Message, Rest};
use super::stats::{ProcessInfo, ProcessStats};
use super::trace::Tracer;

/// A registered process: its id and where to send it messages.
pub struct Registration<R> {
    pub pid: Pid,
    pub mailbox: Mailbox<R>,
    pub fence: Option<Fence>,
    pub stop: Arc<StopFlag>,
    pub stats: Arc<ProcessStats>,
}

impl<R: Rest> Registration<R> {
    /// Tells the process to stop before its next message, and wakes it.
    fn stop(&self, reason: StopReason) {
        if self.stop.set(reason) {
            let _ = self.mailbox.wake(Message::Stop);
        }
    }
}

pub struct Registry<R> {
    max_processes: usize,
    inner: Mutex<Inner<R>>,
}

struct Inner<R> {
    open: bool,
    processes: HashMap<ProcessKey, Registration<R>>,
    /// Traces set on names: a process started under a traced name is
    /// traced from its first message (a trace outlives restarts).
    traces: HashMap<ProcessKey, Arc<Tracer>>,
}

impl<R: Rest> Registry<R> {
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

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
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
        start: impl FnOnce() -> Result<Registration<R>, CallError>,
    ) -> Result<Mailbox<R>, CallError> {
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

    /// How many live processes of `component` run each version.
    pub fn versions_of(&self, component: &str) -> HashMap<Arc<str>, usize> {
        let mut counts = HashMap::new();
        for (key, registration) in &self.lock().processes {
            if &*key.component == component {
                *counts.entry(registration.stats.version()).or_default() += 1;
            }
        }
        counts
    }

    /// The live processes of `component`: their names and mailboxes.
    pub fn of_component(&self, component: &str) -> Vec<(ProcessKey, Mailbox<R>)> {
        self.lock()
            .processes
            .iter()
            .filter(|(key, _)| &*key.component == component)
            .map(|(key, registration)| (key.clone(), registration.mailbox.clone()))
            .collect()
    }

    /// The mailbox of the live process holding `key`, if any (never starts
    /// one).
    pub fn mailbox_of(&self, key: &ProcessKey) -> Option<Mailbox<R>> {
        self.lock()
            .processes
            .get(key)
            .map(|registration| registration.mailbox.clone())
    }

    /// Every live process, as the console shows it. Only reference counts
    /// are taken under the lock every call and cast goes through; the rows
    /// are built after it is released.
    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        let live: Vec<(ProcessKey, Pid, Mailbox<R>, Arc<ProcessStats>)> = {
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
            .map(|(key, pid, mailbox, stats)| stats.info(&key, pid, mailbox.queued()))
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
        let stopped: Vec<Registration<R>> = {
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
        let drained: Vec<Registration<R>> = {
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::process::mailbox::{self, Inbox, Status};

    /// A process that rests forever and counts how it was ended.
    struct Resting(Arc<AtomicUsize>);

    impl Rest for Resting {
        fn wake(self, _inbox: Inbox<Self>) {}
        fn end(self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn key(name: &str) -> ProcessKey {
        ProcessKey::new("c", name)
    }

    fn fence(epoch: u64) -> Option<Fence> {
        Some(Fence {
            slot: 1,
            node: 1,
            epoch,
        })
    }

    /// A registration whose process rests in its mailbox; the counter
    /// counts its ends.
    fn resting(pid: Pid, fence: Option<Fence>) -> (Registration<Resting>, Arc<AtomicUsize>) {
        let ended = Arc::new(AtomicUsize::new(0));
        let (mailbox, mut inbox) = mailbox::new(1024);
        assert!(inbox.rest(Resting(ended.clone())).is_ok());
        let registration = Registration {
            pid,
            mailbox,
            fence,
            stop: Arc::default(),
            stats: Arc::new(ProcessStats::running(&Arc::from("1"))),
        };
        (registration, ended)
    }

    #[test]
    fn a_name_is_started_once_and_then_found() {
        let registry = Registry::<Resting>::new(10);
        let mut starts = 0;
        let first = registry
            .lookup_or_start(&key("p"), None, || {
                starts += 1;
                Ok(resting(1, None).0)
            })
            .expect("started");
        let again = registry
            .lookup_or_start(&key("p"), None, || {
                starts += 1;
                Ok(resting(2, None).0)
            })
            .expect("found");
        assert_eq!(starts, 1);
        assert!(first.same_as(&again));
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_registration_under_another_fence_is_stopped_and_replaced() {
        let registry = Registry::<Resting>::new(10);
        let (old, _) = resting(1, fence(1));
        let old_stop = old.stop.clone();
        let old_mailbox = registry
            .lookup_or_start(&key("p"), fence(1), || Ok(old))
            .expect("started");
        let new_mailbox = registry
            .lookup_or_start(&key("p"), fence(2), || Ok(resting(2, fence(2)).0))
            .expect("replaced");
        assert!(!old_mailbox.same_as(&new_mailbox));
        assert_eq!(old_stop.reason(), Some(&StopReason::Moved));
        // Told to stop, the old process was woken to do so.
        assert_eq!(old_mailbox.queued().0, 1);
    }

    #[test]
    fn a_full_or_closed_registry_refuses_new_names_with_the_reason() {
        let registry = Registry::<Resting>::new(1);
        registry
            .lookup_or_start(&key("a"), None, || Ok(resting(1, None).0))
            .expect("room for one");
        let full = registry.lookup_or_start(&key("b"), None, || Ok(resting(2, None).0));
        assert!(matches!(full, Err(CallError::Refused(reason)) if reason.contains("limit")));
        registry.close();
        let closed = registry.lookup_or_start(&key("c"), None, || Ok(resting(3, None).0));
        assert!(
            matches!(closed, Err(CallError::Refused(reason)) if reason.contains("shutting down"))
        );
    }

    #[test]
    fn closing_ends_resting_processes_where_they_rest() {
        let registry = Registry::<Resting>::new(10);
        let (registration, ended) = resting(1, None);
        let mailbox = registry
            .lookup_or_start(&key("p"), None, || Ok(registration))
            .expect("started");
        registry.close();
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert!(mailbox.inspect(|status| matches!(status, Status::Closed)));
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn only_the_process_that_holds_a_name_gives_it_up() {
        let registry = Registry::<Resting>::new(10);
        registry
            .lookup_or_start(&key("p"), None, || Ok(resting(7, None).0))
            .expect("started");
        registry.unregister(&key("p"), 6);
        assert_eq!(registry.len(), 1, "pid 6 never held it");
        assert_eq!(registry.unregister_if(&key("p"), 7, || None::<()>), None);
        assert_eq!(registry.len(), 1, "kept when the release is refused");
        assert_eq!(registry.unregister_if(&key("p"), 7, || Some(())), Some(()));
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn stop_where_stops_only_the_matching_registrations() {
        let registry = Registry::<Resting>::new(10);
        let (kept, _) = resting(1, fence(1));
        let kept_stop = kept.stop.clone();
        registry
            .lookup_or_start(&key("kept"), fence(1), || Ok(kept))
            .expect("started");
        let (moved, _) = resting(2, fence(2));
        let moved_stop = moved.stop.clone();
        registry
            .lookup_or_start(&key("moved"), fence(2), || Ok(moved))
            .expect("started");
        let stopped = registry.stop_where(&StopReason::Moved, |_, fence| {
            fence.is_some_and(|fence| fence.epoch == 2)
        });
        assert_eq!(stopped, 1);
        assert_eq!(moved_stop.reason(), Some(&StopReason::Moved));
        assert_eq!(kept_stop.reason(), None);
        assert!(registry.mailbox_of(&key("moved")).is_none(), "name freed");
        assert!(registry.mailbox_of(&key("kept")).is_some());
    }

    #[test]
    fn a_trace_on_a_name_follows_its_next_process_and_one_trace_per_name() {
        let registry = Registry::<Resting>::new(10);
        let (tracer, _events) = Tracer::new(crate::process::trace::TraceLimits {
            count: 10,
            per_second: 10,
        });
        let tracer = Arc::new(tracer);
        registry.trace(&key("p"), tracer.clone()).expect("traced");
        let (other, _events) = Tracer::new(crate::process::trace::TraceLimits {
            count: 10,
            per_second: 10,
        });
        assert!(registry.trace(&key("p"), Arc::new(other)).is_err());
        let (registration, _) = resting(1, None);
        let stats = registration.stats.clone();
        registry
            .lookup_or_start(&key("p"), None, || Ok(registration))
            .expect("started");
        assert!(
            stats.trace.load().is_some(),
            "traced from its first message"
        );
        assert_eq!(registry.traces_running(), 1);
        registry.untrace(&key("p"), &tracer);
        assert!(stats.trace.load().is_none());
        assert_eq!(registry.traces_running(), 0);
    }

    #[test]
    fn a_kill_keeps_the_name_until_the_process_ends() {
        let registry = Registry::<Resting>::new(10);
        let (registration, _) = resting(1, None);
        let stop = registration.stop.clone();
        registry
            .lookup_or_start(&key("p"), None, || Ok(registration))
            .expect("started");
        assert!(registry.kill(&key("p")));
        assert_eq!(stop.reason(), Some(&StopReason::Killed));
        assert!(registry.mailbox_of(&key("p")).is_some(), "still held");
        assert!(!registry.kill(&key("nobody")));
    }
}
