//! Hibernated processes' states past their memory budget, in a column
//! family of their own: local to the node, never replicated, written
//! without the WAL (a hibernated process does not outlive its node's run),
//! and cleared at every start.

use rocksdb::WriteOptions;

use super::{HIBERNATED_CF, Storage, StorageError};
use crate::process::{Pid, StateSpill};

/// The spill of [`crate::process::HibernatedStates`].
pub struct HibernatedSpill {
    storage: Storage,
}

fn without_wal() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    options
}

impl HibernatedSpill {
    pub(super) fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// Forgets every state: at start, none of them has a process any more.
    pub(super) fn clear(&self) -> Result<(), StorageError> {
        let cf = self.storage.column_family(HIBERNATED_CF)?;
        self.storage
            .db
            .delete_range_cf(cf, [0u8; 8], [0xffu8; 8])
            .map_err(StorageError::from)
    }

    fn keep_state(&self, pid: Pid, state: &[u8]) -> Result<(), StorageError> {
        let cf = self.storage.column_family(HIBERNATED_CF)?;
        Ok(self
            .storage
            .db
            .put_cf_opt(cf, pid.to_be_bytes(), state, &without_wal())?)
    }

    fn take_state(&self, pid: Pid) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = self.storage.column_family(HIBERNATED_CF)?;
        let state = self.storage.db.get_cf(cf, pid.to_be_bytes())?;
        self.forget_state(pid)?;
        Ok(state)
    }

    fn forget_state(&self, pid: Pid) -> Result<(), StorageError> {
        let cf = self.storage.column_family(HIBERNATED_CF)?;
        Ok(self
            .storage
            .db
            .delete_cf_opt(cf, pid.to_be_bytes(), &without_wal())?)
    }
}

impl StateSpill for HibernatedSpill {
    fn keep(&self, pid: Pid, state: &[u8]) -> Result<(), String> {
        self.keep_state(pid, state).map_err(|e| e.to_string())
    }

    fn take(&self, pid: Pid) -> Result<Option<Vec<u8>>, String> {
        self.take_state(pid).map_err(|e| e.to_string())
    }

    fn peek(&self, pid: Pid) -> Result<Option<Vec<u8>>, String> {
        let cf = self
            .storage
            .column_family(HIBERNATED_CF)
            .map_err(|e| e.to_string())?;
        self.storage
            .db
            .get_cf(cf, pid.to_be_bytes())
            .map_err(|e| StorageError::from(e).to_string())
    }

    fn forget(&self, pid: Pid) -> Result<(), String> {
        self.forget_state(pid).map_err(|e| e.to_string())
    }
}
