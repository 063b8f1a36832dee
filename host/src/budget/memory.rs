//! A budget of bytes shared by many holders: what HTTP request handlers'
//! linear memories may add up to, so that a burst of requests for large
//! answers cannot drive the node's memory up without bound.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes shared by many holders; each takes before it grows and gives back
/// when it goes.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes `bytes`, or refuses (and counts it) when that would pass the
    /// limit.
    pub fn try_take(&self, bytes: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.limit)
            });
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken.is_ok()
    }

    /// Gives back `bytes` taken before.
    pub fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_past_the_limit_are_refused_until_bytes_come_back() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(50));
        assert!(budget.try_take(40));
        assert_eq!((budget.used(), budget.refused()), (100, 1));
        budget.give_back(60);
        assert!(budget.try_take(50));
        assert!(!budget.try_take(usize::MAX));
    }
}
