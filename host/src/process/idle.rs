//! Idle timers: when to look at a resting process again.
//!
//! A parked process may hibernate after `--hibernate-after`, and any
//! process expires after `--idle-timeout` without a message. Rather than a
//! timer per process re-armed on every message, the node keeps one heap of
//! "look again at" times: one entry per instantiation or hibernation. What
//! happens when an entry is due is the process's business
//! (`crate::process::resting::idle_due`): a process that got messages
//! since is put back for later.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use super::mailbox::Mailbox;

/// Resting processes by when to look at them again.
pub struct IdleTimers<R> {
    due: Mutex<BinaryHeap<Reverse<Due<R>>>>,
}

impl<R> Default for IdleTimers<R> {
    fn default() -> Self {
        Self {
            due: Mutex::new(BinaryHeap::new()),
        }
    }
}

struct Due<R> {
    at: Instant,
    mailbox: Mailbox<R>,
}

impl<R> PartialEq for Due<R> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl<R> Eq for Due<R> {}
impl<R> PartialOrd for Due<R> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<R> Ord for Due<R> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl<R> IdleTimers<R> {
    fn due(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Due<R>>>> {
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Look at `mailbox`'s process again at `at`.
    pub fn schedule(&self, at: Instant, mailbox: Mailbox<R>) {
        self.due().push(Reverse(Due { at, mailbox }));
    }

    /// The processes due by `now`, earliest first, taken off the timers.
    pub fn take_due(&self, now: Instant) -> Vec<Mailbox<R>> {
        let mut due = Vec::new();
        let mut heap = self.due();
        while heap.peek().is_some_and(|Reverse(entry)| entry.at <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push(entry.mailbox);
            }
        }
        due
    }

    /// Entries waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.due().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::process::mailbox::{self, Idle};

    #[test]
    fn only_what_is_due_comes_out_earliest_first() {
        let timers = IdleTimers::<Idle>::default();
        let now = Instant::now();
        let (late, _l) = mailbox::new::<Idle>(64);
        let (early, _e) = mailbox::new::<Idle>(64);
        let (middle, _m) = mailbox::new::<Idle>(64);
        timers.schedule(now + Duration::from_secs(30), late.clone());
        timers.schedule(now + Duration::from_secs(1), early.clone());
        timers.schedule(now + Duration::from_secs(10), middle.clone());

        assert!(timers.take_due(now).is_empty(), "nothing due yet");
        let due = timers.take_due(now + Duration::from_secs(10));
        assert_eq!(due.len(), 2);
        assert!(due[0].same_as(&early) && due[1].same_as(&middle));
        assert_eq!(timers.len(), 1, "taken off the timers");
        let due = timers.take_due(now + Duration::from_secs(60));
        assert!(due.len() == 1 && due[0].same_as(&late));
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn a_process_may_be_scheduled_twice_and_comes_out_twice() {
        // One entry per instantiation or hibernation: the process decides,
        // each time, whether it is really due.
        let timers = IdleTimers::<Idle>::default();
        let now = Instant::now();
        let (mailbox, _inbox) = mailbox::new::<Idle>(64);
        timers.schedule(now, mailbox.clone());
        timers.schedule(now, mailbox.clone());
        assert_eq!(timers.take_due(now).len(), 2);
    }
}
