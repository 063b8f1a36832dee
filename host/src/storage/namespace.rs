//! A component's own keys, and the limits on what a guest may store.
//!
//! Every key a guest writes is stored as `component name, 0x00, guest key`.
//! Component names never hold a zero byte (see `wasm::validate_name`), so no
//! guest key can reach into another component's range: a guest has no way
//! to name a key outside its own prefix.
//!
//! On a node that is part of a cluster, writes are replicated: a namespace
//! hands its batch (keys already prefixed) to the [`Replicator`] the cluster
//! installed, which returns once a majority has it and this node has applied
//! it. Reads stay local.

use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::Storage;
#[cfg(doc)]
use super::cluster_store::Replicator;
use crate::process::Fence;

/// Longest key a guest may use.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value (or batch) a guest may write.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Most pairs one `scan-prefix` returns.
pub const MAX_SCAN_PAIRS: usize = 1_000;
/// Most bytes (keys and values) one `scan-prefix` gathers in the host's
/// memory before it stops: a thousand 16 MiB values would be 16 GiB. A scan
/// always returns at least one pair when there is one, so paging on with
/// `start-after` always makes progress.
pub const MAX_SCAN_BYTES: usize = MAX_VALUE_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("invalid key: empty or longer than {MAX_KEY_BYTES} bytes")]
    InvalidKey,
    #[error("value or batch larger than {MAX_VALUE_BYTES} bytes")]
    TooLarge,
    #[error("storage engine: {0}")]
    Io(String),
    /// The cluster could not make the write durable on a majority: this
    /// node is cut off from it, or it has no leader. Not applied.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been made (the link to the leader
    /// broke after sending it, or it was committed but not yet applied
    /// here). The writing process can no longer trust that its memory
    /// matches storage, so it is ended and restarts from storage.
    #[error("storage write of unknown outcome: {0}")]
    Indeterminate(String),
}

impl From<rocksdb::Error> for StorageError {
    fn from(error: rocksdb::Error) -> Self {
        StorageError::Io(error.into_string())
    }
}

/// A key and its value, as a scan returns them.
pub type Pair = (Vec<u8>, Vec<u8>);

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A component's own keys.
#[derive(Clone)]
pub struct Namespace {
    storage: Storage,
    prefix: Vec<u8>,
    /// The registration of the process writing through this namespace (in a
    /// cluster): its writes count only while it holds its name.
    fence: Option<Fence>,
    /// Why writes are refused, if they are (a swap's dry run).
    read_only: Option<&'static str>,
}

impl Namespace {
    pub(super) fn new(storage: Storage, component: &str) -> Self {
        let mut prefix = component.as_bytes().to_vec();
        prefix.push(0);
        Self {
            storage,
            prefix,
            fence: None,
            read_only: None,
        }
    }

    /// The same keys, readable only: every write is refused with `why`.
    pub fn read_only(mut self, why: &'static str) -> Self {
        self.read_only = Some(why);
        self
    }

    fn full_key(&self, key: &[u8]) -> Result<Vec<u8>, StorageError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(StorageError::InvalidKey);
        }
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        Ok(full)
    }

    /// The same keys, written on behalf of the process registered as
    /// `fence`.
    pub fn fenced(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.storage.db.get(self.full_key(key)?)?)
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.batch(vec![Operation::Put(key.to_vec(), value.to_vec())])
            .await
    }

    pub async fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.batch(vec![Operation::Delete(key.to_vec())]).await
    }

    /// Applies every operation or none.
    pub async fn batch(&self, operations: Vec<Operation>) -> Result<(), StorageError> {
        if let Some(why) = self.read_only {
            return Err(StorageError::Unavailable(why.into()));
        }
        self.storage.disk.check()?;
        let operations = self.prefixed(operations)?;
        if let Some(replicator) = self.storage.replicator.get() {
            return replicator.clone().write(operations, self.fence).await;
        }
        let mut batch = WriteBatch::default();
        for operation in &operations {
            match operation {
                Operation::Put(key, value) => batch.put(key, value),
                Operation::Delete(key) => batch.delete(key),
            }
        }
        self.storage.write_local(batch).await
    }

    /// The operations with their keys in this namespace, checked against
    /// the key and size limits. Deleted keys count towards the size too: a
    /// batch travels whole, as one entry of the cluster's log.
    fn prefixed(&self, operations: Vec<Operation>) -> Result<Vec<Operation>, StorageError> {
        let mut bytes = 0usize;
        operations
            .into_iter()
            .map(|operation| {
                let (key, weight) = match &operation {
                    Operation::Put(key, value) => (key, key.len() + value.len()),
                    Operation::Delete(key) => (key, key.len()),
                };
                bytes = bytes.saturating_add(weight);
                if bytes > MAX_VALUE_BYTES {
                    return Err(StorageError::TooLarge);
                }
                let key = self.full_key(key)?;
                Ok(match operation {
                    Operation::Put(_, value) => Operation::Put(key, value),
                    Operation::Delete(_) => Operation::Delete(key),
                })
            })
            .collect()
    }

    /// Up to `limit` pairs (at most [`MAX_SCAN_PAIRS`], and fewer once they
    /// pass [`MAX_SCAN_BYTES`]) whose key starts with `prefix`, in key order,
    /// after `start_after` when given. Keys come back without the namespace
    /// prefix.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, StorageError> {
        if prefix.len() > MAX_KEY_BYTES {
            return Err(StorageError::InvalidKey);
        }
        let mut full_prefix = self.prefix.clone();
        full_prefix.extend_from_slice(prefix);
        let start = match start_after {
            Some(after) => {
                // The smallest key strictly greater than `after`.
                let mut start = self.prefix.clone();
                start.extend_from_slice(after);
                start.push(0);
                start.max(full_prefix.clone())
            }
            None => full_prefix.clone(),
        };
        let limit = limit.min(MAX_SCAN_PAIRS);
        let mut pairs = Vec::new();
        let mut bytes = 0usize;
        let iterator = self
            .storage
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward));
        for item in iterator {
            if pairs.len() >= limit || bytes >= MAX_SCAN_BYTES {
                break;
            }
            let (key, value) = item?;
            if !key.starts_with(&full_prefix) {
                break;
            }
            bytes = bytes.saturating_add(key.len() + value.len());
            pairs.push((key[self.prefix.len()..].to_vec(), value.into_vec()));
        }
        Ok(pairs)
    }
}
