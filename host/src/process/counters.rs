//! What the process runtime counts, for the metrics page.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct ProcessCounters {
    started: AtomicU64,
    crashed: AtomicU64,
    interrupted: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
    mailbox_full: AtomicU64,
    hibernated: AtomicU64,
    woken: AtomicU64,
    hand_overs_failed: AtomicU64,
}

/// One counter's value, by name.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterValues {
    pub started: u64,
    pub crashed: u64,
    pub interrupted: u64,
    pub expired: u64,
    pub refused: u64,
    pub mailbox_full: u64,
    pub hibernated: u64,
    pub woken: u64,
    pub hand_overs_failed: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ProcessCounters {
    pub(super) fn started(&self) {
        bump(&self.started);
    }
    pub(super) fn crashed(&self) {
        bump(&self.crashed);
    }
    /// A process ended by a storage write of unknown outcome.
    pub(super) fn interrupted(&self) {
        bump(&self.interrupted);
    }
    pub(super) fn expired(&self) {
        bump(&self.expired);
    }
    /// A start refused by restart intensity, or for want of an instance
    /// permit.
    pub(super) fn refused(&self) {
        bump(&self.refused);
    }
    pub(super) fn mailbox_full(&self) {
        bump(&self.mailbox_full);
    }
    /// A process handed its state over and dropped its instance.
    pub(super) fn hibernated(&self) {
        bump(&self.hibernated);
    }
    /// A hibernated process got a message and took its state back.
    pub(super) fn woken(&self) {
        bump(&self.woken);
    }
    /// A process's hand-over trapped or failed: it expired instead.
    pub(super) fn hand_over_failed(&self) {
        bump(&self.hand_overs_failed);
    }

    pub fn values(&self) -> CounterValues {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CounterValues {
            started: load(&self.started),
            crashed: load(&self.crashed),
            interrupted: load(&self.interrupted),
            expired: load(&self.expired),
            refused: load(&self.refused),
            mailbox_full: load(&self.mailbox_full),
            hibernated: load(&self.hibernated),
            woken: load(&self.woken),
            hand_overs_failed: load(&self.hand_overs_failed),
        }
    }
}
