//! Instance slots and hibernation: how a node keeps far more processes
//! alive than it holds component instances.
//!
//! A process holds one of the pool's instance slots only while it has an
//! instance. When it has been idle for `--hibernate-after`, or when another
//! process needs a slot and none is free, it hands its state over (the
//! behaviour's `hand-over`), the host keeps those bytes in its mailbox, and
//! the instance is dropped: a hibernated process costs a registry entry, a
//! mailbox and its state's bytes. Its next message starts a fresh instance
//! from those bytes (`take-over`) before it is handled
//! (`process::Hibernated`).
//!
//! This module owns the counting: [`InstanceSlots`] (who may instantiate,
//! and whom to ask to hibernate when nobody may) and [`Sleeps`] (when a
//! hibernated process has been idle long enough to expire, as a running one
//! would). It calls nothing but mailboxes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::mailbox::Mailbox;

/// Processes asked to hibernate each time a process finds no slot free:
/// a few at once, so a burst of starts does not ask one at a time.
const ASKED_PER_SHORTAGE: usize = 8;

/// How often a process still waiting for a slot asks again.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(20);

/// The instance slots processes may hold at once (the pool has more, for
/// HTTP handlers and the console), and the running processes oldest first.
pub struct InstanceSlots {
    permits: Arc<Semaphore>,
    total: u32,
    /// Processes that hold a slot, oldest first: whom to ask to hibernate.
    /// Entries of processes that have since slept or ended are skipped when
    /// met, and swept out when the queue grows past twice the slots.
    running: Mutex<VecDeque<Mailbox>>,
}

/// A held slot; dropping it frees the slot. Drop it after the instance.
pub type Slot = OwnedSemaphorePermit;

impl InstanceSlots {
    pub fn new(total: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            running: Mutex::new(VecDeque::new()),
        }
    }

    fn running(&self) -> MutexGuard<'_, VecDeque<Mailbox>> {
        // Pushes and pops only: a poisoned lock is safe to keep using.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Slots held now.
    pub fn held(&self) -> u32 {
        self.total
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }

    /// A slot, at once if one is free; otherwise idle processes are asked
    /// to hibernate, and this waits up to `within` for one of them.
    pub async fn acquire(&self, within: Duration) -> Result<Slot, String> {
        if let Ok(slot) = self.permits.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let give_up = Instant::now() + within;
        loop {
            self.ask_to_hibernate(ASKED_PER_SHORTAGE);
            let wait = ASK_AGAIN_AFTER.min(give_up.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
                Ok(Ok(slot)) => return Ok(slot),
                Ok(Err(_)) => return Err("the node is shutting down".into()),
                Err(_) if Instant::now() >= give_up => {
                    return Err(format!(
                        "no instance slot came free within {within:?}: all {} are held by \
                         processes busy with messages (--max-instances)",
                        self.total
                    ));
                }
                Err(_) => {}
            }
        }
    }

    /// Records that the process of `mailbox` now holds a slot.
    pub fn now_running(&self, mailbox: Mailbox) {
        let mut running = self.running();
        running.push_back(mailbox);
        if running.len() > 2 * self.total as usize + 64 {
            running.retain(Mailbox::is_running);
        }
    }

    /// Asks up to `count` running processes, oldest first, to hibernate.
    fn ask_to_hibernate(&self, count: usize) {
        let mut asked = 0;
        let mut running = self.running();
        while asked < count {
            let Some(mailbox) = running.pop_front() else {
                break;
            };
            if mailbox.ask_to_hibernate() {
                asked += 1;
            }
        }
    }
}

/// Hibernated processes by when they expire, as a running process expires
/// after `--idle-timeout` without a message.
#[derive(Default)]
pub struct Sleeps {
    due: Mutex<BinaryHeap<Reverse<Sleep>>>,
}

/// One sleep of one process: the mailbox ends it at `until` if the process
/// still sleeps that sleep (a woken process's old sleeps are skipped).
struct Sleep {
    until: Instant,
    mailbox: Mailbox,
    number: u32,
}

impl PartialEq for Sleep {
    fn eq(&self, other: &Self) -> bool {
        self.until == other.until
    }
}
impl Eq for Sleep {}
impl PartialOrd for Sleep {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sleep {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.until.cmp(&other.until)
    }
}

impl Sleeps {
    fn due(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Sleep>>> {
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Schedules the end of sleep `number` of `mailbox`'s process at `until`.
    pub fn asleep(&self, mailbox: Mailbox, number: u32, until: Instant) {
        self.due().push(Reverse(Sleep {
            until,
            mailbox,
            number,
        }));
    }

    /// Ends the sleeps due by `now` (processes still asleep expire).
    /// Returns how many processes expired.
    pub fn end_due(&self, now: Instant) -> usize {
        let mut due = Vec::new();
        {
            let mut heap = self.due();
            while heap.peek().is_some_and(|Reverse(sleep)| sleep.until <= now) {
                if let Some(Reverse(sleep)) = heap.pop() {
                    due.push(sleep);
                }
            }
        }
        // Outside the lock: ending a process takes the registry's lock.
        due.into_iter()
            .filter(|sleep| sleep.mailbox.end_sleep(sleep.number))
            .count()
    }

    /// Sleeps scheduled (some may have woken since).
    pub fn len(&self) -> usize {
        self.due().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
