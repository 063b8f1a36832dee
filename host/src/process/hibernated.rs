//! Where hibernated processes' states are kept: in memory while they fit
//! `--hibernate-memory`, past it in a [`StateSpill`] (the node's storage,
//! in a local column family: `crate::storage`).
//!
//! A state is never dropped for want of room: should the spill fail, it
//! stays in memory, over the budget, and the failure is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::id::Pid;

/// Where states past the memory budget go, by the pid of the process that
/// handed them over. Local to the node's run: nothing in it outlives it.
pub trait StateSpill: Send + Sync {
    fn keep(&self, pid: Pid, state: &[u8]) -> Result<(), String>;
    /// Reads and forgets.
    fn take(&self, pid: Pid) -> Result<Option<Vec<u8>>, String>;
    /// Reads and keeps.
    fn peek(&self, pid: Pid) -> Result<Option<Vec<u8>>, String>;
    fn forget(&self, pid: Pid) -> Result<(), String>;
}

/// The handed-over states of a node's hibernated processes.
pub struct HibernatedStates {
    budget: usize,
    in_memory: AtomicUsize,
    spilled: AtomicU64,
    spill: Arc<dyn StateSpill>,
}

/// One hibernated process's state, wherever it is kept.
pub enum KeptState {
    Memory(Vec<u8>),
    /// In the spill, under the process's pid.
    Spilled,
}

impl HibernatedStates {
    pub fn new(budget: usize, spill: Arc<dyn StateSpill>) -> Self {
        Self {
            budget,
            in_memory: AtomicUsize::new(0),
            spilled: AtomicU64::new(0),
            spill,
        }
    }

    /// Bytes of states kept in memory now.
    pub fn in_memory(&self) -> usize {
        self.in_memory.load(Ordering::Relaxed)
    }

    /// States spilled so far.
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Keeps process `pid`'s `state`: in memory if it fits the budget,
    /// else in the spill (in memory after all should that fail).
    pub fn keep(&self, pid: Pid, state: Vec<u8>) -> KeptState {
        let len = state.len();
        let before = self.in_memory.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) <= self.budget {
            return KeptState::Memory(state);
        }
        self.in_memory.fetch_sub(len, Ordering::Relaxed);
        match self.spill.keep(pid, &state) {
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
    pub fn take(&self, pid: Pid, kept: KeptState) -> Result<Vec<u8>, String> {
        match kept {
            KeptState::Memory(state) => {
                self.in_memory.fetch_sub(state.len(), Ordering::Relaxed);
                Ok(state)
            }
            KeptState::Spilled => match self.spill.take(pid) {
                Ok(Some(state)) => Ok(state),
                Ok(None) => Err("its spilled state is missing from storage".into()),
                Err(error) => Err(format!("cannot read its spilled state: {error}")),
            },
        }
    }

    /// A copy of process `pid`'s state, which stays kept.
    pub fn peek(&self, pid: Pid, kept: &KeptState) -> Result<Vec<u8>, String> {
        match kept {
            KeptState::Memory(state) => Ok(state.clone()),
            KeptState::Spilled => self
                .spill
                .peek(pid)?
                .ok_or_else(|| "its spilled state is missing from storage".into()),
        }
    }

    /// Forgets process `pid`'s state: it ended while hibernated.
    pub fn forget(&self, pid: Pid, kept: KeptState) {
        match kept {
            KeptState::Memory(state) => {
                self.in_memory.fetch_sub(state.len(), Ordering::Relaxed);
            }
            KeptState::Spilled => {
                if let Err(error) = self.spill.forget(pid) {
                    tracing::warn!(pid, "cannot forget a spilled hibernated state: {error}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// A spill in a map, or one that always fails.
    #[derive(Default)]
    struct MapSpill {
        states: Mutex<HashMap<Pid, Vec<u8>>>,
        broken: bool,
    }

    impl StateSpill for MapSpill {
        fn keep(&self, pid: Pid, state: &[u8]) -> Result<(), String> {
            if self.broken {
                return Err("disk full".into());
            }
            self.states.lock().unwrap().insert(pid, state.to_vec());
            Ok(())
        }
        fn take(&self, pid: Pid) -> Result<Option<Vec<u8>>, String> {
            Ok(self.states.lock().unwrap().remove(&pid))
        }
        fn peek(&self, pid: Pid) -> Result<Option<Vec<u8>>, String> {
            Ok(self.states.lock().unwrap().get(&pid).cloned())
        }
        fn forget(&self, pid: Pid) -> Result<(), String> {
            self.states.lock().unwrap().remove(&pid);
            Ok(())
        }
    }

    #[test]
    fn states_past_the_budget_are_spilled_and_come_back() {
        let spill = Arc::new(MapSpill::default());
        let states = HibernatedStates::new(10, spill.clone());
        let first = states.keep(1, vec![1; 8]);
        assert!(matches!(first, KeptState::Memory(_)));
        let second = states.keep(2, vec![2; 8]);
        assert!(matches!(second, KeptState::Spilled), "8 + 8 > 10");
        assert_eq!((states.in_memory(), states.spilled()), (8, 1));

        assert_eq!(states.take(2, second), Ok(vec![2; 8]));
        assert!(
            spill.states.lock().unwrap().is_empty(),
            "taken is forgotten"
        );
        assert_eq!(states.take(1, first), Ok(vec![1; 8]));
        assert_eq!(states.in_memory(), 0);
    }

    #[test]
    fn a_failing_spill_keeps_the_state_in_memory() {
        let spill = Arc::new(MapSpill {
            broken: true,
            ..MapSpill::default()
        });
        let states = HibernatedStates::new(0, spill);
        let kept = states.keep(7, vec![7; 100]);
        assert!(matches!(kept, KeptState::Memory(_)));
        assert_eq!(states.in_memory(), 100, "over the budget, never lost");
        states.forget(7, kept);
        assert_eq!(states.in_memory(), 0);
    }

    #[test]
    fn a_lost_spilled_state_is_an_error_not_an_empty_state() {
        let states = HibernatedStates::new(0, Arc::new(MapSpill::default()));
        let error = states.take(3, KeptState::Spilled).expect_err("missing");
        assert!(error.contains("missing"), "{error}");
    }
}
