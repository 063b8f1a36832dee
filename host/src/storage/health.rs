//! Whether the database still takes writes.
//!
//! RocksDB answers an I/O error it cannot retry (a new file refused, a disk
//! error) by setting a background error, after which it refuses every write
//! until the database is reopened. A node must not look healthy then: the
//! first failed write is logged at ERROR, the failure shows on the metrics
//! page, and every later write is refused up front, as "not applied", with
//! the reason, instead of reaching RocksDB. Once the cause is gone
//! ([`super::Storage::can_reopen`]), the node restarts itself, which
//! reopens the database (`crate::boot`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::StorageError;
use crate::metrics::Series;

/// The database's write health, shared by every handle on it.
#[derive(Debug, Default)]
pub struct Health {
    /// Whether writes stopped: read on every write, so the lock below is
    /// taken only once the database has failed.
    failed: AtomicBool,
    /// Why writes stopped, once they have.
    failure: Mutex<Option<String>>,
    errors: AtomicU64,
}

impl Health {
    /// Refuses a write up front once the database has failed.
    pub fn check_writable(&self) -> Result<(), StorageError> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.lock() {
            Some(reason) => Err(StorageError::Unavailable(format!(
                "storage failed and takes no writes until the node has restarted to reopen it, \
                 which it does by itself once the cause is gone ({reason})"
            ))),
            None => Ok(()),
        }
    }

    /// Records a failed write: the first one is logged at ERROR, and the
    /// database is failed from then on. The write itself may have reached
    /// the write-ahead log: its outcome is unknown.
    pub fn write_failed(&self, error: rocksdb::Error) -> StorageError {
        let reason = error.into_string();
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut failure = self.lock();
        if failure.is_none() {
            tracing::error!(
                "storage failed: {reason}; every write is refused from now on, reads still \
                 work; the node restarts itself to reopen it once the cause is gone (it \
                 checks every few seconds: out of files or disk?)"
            );
            *failure = Some(reason.clone());
            self.failed.store(true, Ordering::Release);
        }
        StorageError::Indeterminate(format!("storage failed during the write: {reason}"))
    }

    /// Why writes stopped, if they have.
    pub fn failure(&self) -> Option<String> {
        self.lock().clone()
    }

    pub fn series(&self) -> Vec<Series> {
        vec![
            Series::gauge(
                "host_storage_failed",
                "1 once the database has failed a write and refuses every write until the \
                 node has restarted itself to reopen it; 0 while it takes writes.",
                u64::from(self.failed.load(Ordering::Acquire)),
            ),
            Series::counter(
                "host_storage_write_errors_total",
                "Writes the database failed.",
                self.errors.load(Ordering::Relaxed),
            ),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}
