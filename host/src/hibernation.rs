//! Instance slots and idle timers: how a node keeps far more processes
//! alive than it holds component instances.
//!
//! A process holds one of the pool's instance slots only while it has an
//! instance. When it has been idle for `--hibernate-after`, or when another
//! process needs a slot and none is free, it hands its state over (the
//! behaviour's `hand-over`), the host keeps those bytes in its mailbox, and
//! the instance is dropped: a hibernated process costs a registry entry, a
//! mailbox and its state's bytes. Its next message starts a fresh instance
//! from those bytes (`take-over`) before it is handled (`crate::process`).
//!
//! This module owns the counting: [`InstanceSlots`] (who may instantiate,
//! and whom to ask to make room when nobody may), [`IdleTimers`] (when a
//! resting process has been idle long enough to hibernate or expire), and
//! [`SleepingStates`] (where handed-over states are kept: in memory up to
//! `--hibernate-memory`, past it in storage's local `hibernated` column
//! family). What happens to a process is the process's business: the first
//! two call back into it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::process::ProcessMailbox;
use crate::storage::Storage;

/// Processes asked to make room each time a process finds no slot free: a
/// few at once, so a burst of starts does not ask one at a time.
const ASKED_PER_SHORTAGE: usize = 8;

/// How often a process still waiting for a slot asks again.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(20);

/// The instance slots processes may hold at once (the pool has more, for
/// HTTP handlers and the console), and the processes holding them, oldest
/// first.
pub struct InstanceSlots {
    permits: Arc<Semaphore>,
    total: u32,
    /// Processes that got a slot, oldest first: whom to ask to make room.
    /// Entries of processes that have since hibernated or ended are skipped
    /// when met, and swept out when the queue grows past twice the slots.
    holders: Mutex<VecDeque<ProcessMailbox>>,
}

/// A held slot; dropping it frees the slot. Drop it after the instance.
pub type Slot = OwnedSemaphorePermit;

impl InstanceSlots {
    pub fn new(total: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            holders: Mutex::new(VecDeque::new()),
        }
    }

    fn holders(&self) -> MutexGuard<'_, VecDeque<ProcessMailbox>> {
        // Pushes and pops only: a poisoned lock is safe to keep using.
        self.holders
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

    /// A slot, at once if one is free. Otherwise holders, oldest first, are
    /// offered to `make_room` (which hibernates the idle ones and says
    /// whether it did), and this waits up to `within` for a slot.
    pub async fn acquire(
        &self,
        within: Duration,
        make_room: impl Fn(&ProcessMailbox) -> bool,
    ) -> Result<Slot, String> {
        if let Ok(slot) = self.permits.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let give_up = Instant::now() + within;
        loop {
            self.ask(ASKED_PER_SHORTAGE, &make_room);
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
    pub fn held_by(&self, mailbox: ProcessMailbox) {
        let mut holders = self.holders();
        holders.push_back(mailbox);
        if holders.len() > 2 * self.total as usize + 64 {
            holders.retain(crate::process::holds_instance);
        }
    }

    /// Offers up to `count` holders, oldest first, to `make_room`, until
    /// `count` of them have made room (or were asked to, once done).
    fn ask(&self, count: usize, make_room: &impl Fn(&ProcessMailbox) -> bool) {
        let mut asked = 0;
        let mut offered = 0;
        let mut holders = self.holders();
        let held = holders.len();
        while asked < count && offered < held {
            let Some(mailbox) = holders.pop_front() else {
                break;
            };
            offered += 1;
            if make_room(&mailbox) {
                asked += 1;
            }
        }
    }
}

/// Resting processes by when to look at them again: a parked one may
/// hibernate after `--hibernate-after`, any one expires after
/// `--idle-timeout` without a message. One entry per instantiation or
/// hibernation; a process that got messages since is looked at and put
/// back for later, as a running process's idle timer is moved.
#[derive(Default)]
pub struct IdleTimers {
    due: Mutex<BinaryHeap<Reverse<Due>>>,
}

struct Due {
    at: Instant,
    mailbox: ProcessMailbox,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl IdleTimers {
    fn due(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Look at `mailbox`'s process again at `at`.
    pub fn schedule(&self, at: Instant, mailbox: ProcessMailbox) {
        self.due().push(Reverse(Due { at, mailbox }));
    }

    /// The processes due by `now`, taken off the timers.
    pub fn take_due(&self, now: Instant) -> Vec<ProcessMailbox> {
        let mut due = Vec::new();
        let mut heap = self.due();
        while heap.peek().is_some_and(|Reverse(entry)| entry.at <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push(entry.mailbox);
            }
        }
        due
    }
}

/// Where the handed-over states of hibernated processes are kept: in
/// memory while they fit the budget, in storage past it.
pub struct SleepingStates {
    budget: usize,
    in_memory: AtomicUsize,
    spilled: AtomicU64,
}

/// One hibernated process's state, wherever it is kept.
pub enum KeptState {
    Memory(Vec<u8>),
    /// In storage, under the process's pid.
    Spilled,
}

impl SleepingStates {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            in_memory: AtomicUsize::new(0),
            spilled: AtomicU64::new(0),
        }
    }

    /// Bytes of states kept in memory now.
    pub fn in_memory(&self) -> usize {
        self.in_memory.load(Ordering::Relaxed)
    }

    /// States written to storage so far.
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Keeps process `pid`'s `state`: in memory if it fits the budget,
    /// else in storage (in memory after all should storage fail: a state is
    /// never dropped for want of room).
    pub fn keep(&self, storage: &Storage, pid: u64, state: Vec<u8>) -> KeptState {
        let len = state.len();
        let before = self.in_memory.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) <= self.budget {
            return KeptState::Memory(state);
        }
        self.in_memory.fetch_sub(len, Ordering::Relaxed);
        match storage.keep_hibernated(pid, &state) {
            Ok(()) => {
                self.spilled.fetch_add(1, Ordering::Relaxed);
                KeptState::Spilled
            }
            Err(error) => {
                tracing::warn!(
                    pid,
                    "cannot spill a hibernated state to storage, kept in memory: {error}"
                );
                self.in_memory.fetch_add(len, Ordering::Relaxed);
                KeptState::Memory(state)
            }
        }
    }

    /// Takes process `pid`'s state back, to wake it.
    pub fn take(&self, storage: &Storage, pid: u64, kept: KeptState) -> Result<Vec<u8>, String> {
        match kept {
            KeptState::Memory(state) => {
                self.in_memory.fetch_sub(state.len(), Ordering::Relaxed);
                Ok(state)
            }
            KeptState::Spilled => match storage.take_hibernated(pid) {
                Ok(Some(state)) => Ok(state),
                Ok(None) => Err("its spilled state is missing from storage".into()),
                Err(error) => Err(format!("cannot read its spilled state: {error}")),
            },
        }
    }

    /// Forgets process `pid`'s state: it ended while hibernated.
    pub fn forget(&self, storage: &Storage, pid: u64, kept: KeptState) {
        match kept {
            KeptState::Memory(state) => {
                self.in_memory.fetch_sub(state.len(), Ordering::Relaxed);
            }
            KeptState::Spilled => {
                if let Err(error) = storage.forget_hibernated(pid) {
                    tracing::warn!(pid, "cannot forget a spilled hibernated state: {error}");
                }
            }
        }
    }
}
