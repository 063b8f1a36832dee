//! The Raft log, in the node's RocksDB (storage's [`Family::Log`], keyed by
//! index as 8 big-endian bytes so keys sort in log order), with the vote,
//! the committed index and the last purged entry in [`Family::Meta`].
//!
//! An append is acknowledged to Raft once it is in RocksDB's write-ahead
//! log: fsynced with `--fsync`, otherwise in the OS's hands, which survives
//! the host being killed but not the machine losing power. That is the
//! same durability a lone node gives its writes, and what "a majority has
//! it durably" means for the cluster.

use std::fmt::{Debug, Display};
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::storage::{ClusterStore, Family};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

pub(super) fn write_error(error: impl Display) -> StorageError {
    StorageIOError::write(AnyError::error(error.to_string())).into()
}

pub(super) fn read_error(error: impl Display) -> StorageError {
    StorageIOError::read(AnyError::error(error.to_string())).into()
}

pub(super) fn encode(value: &impl Serialize) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(write_error)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(read_error)
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Reads a value of the cluster's metadata.
pub(super) fn read_meta<T: DeserializeOwned>(
    store: &ClusterStore,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    match store.get(Family::Meta, key).map_err(read_error)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

#[derive(Clone)]
pub struct LogStore {
    store: ClusterStore,
}

impl LogStore {
    pub fn new(store: ClusterStore) -> Self {
        Self { store }
    }

    async fn put_meta(&self, key: &[u8], value: &impl Serialize) -> Result<(), StorageError> {
        let mut batch = self.store.batch();
        batch.put(Family::Meta, key, encode(value)?);
        self.store.write_durably(batch).await.map_err(write_error)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        match self.store.last(Family::Log).map_err(read_error)? {
            Some((_, value)) => Ok(Some(decode(&value)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let iterator = self
            .store
            .scan_from(Family::Log, &index_key(start))
            .map_err(read_error)?;
        let mut entries = Vec::new();
        for item in iterator {
            let (key, value) = item.map_err(read_error)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(read_error)?);
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = read_meta(&self.store, LAST_PURGED)?;
        let last = self.last_entry()?.map(|entry| entry.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        read_meta(&self.store, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(read_meta::<Option<LogId>>(&self.store, COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = self.store.batch();
        for entry in entries {
            batch.put(Family::Log, index_key(entry.log_id.index), encode(&entry)?);
        }
        let result = self.store.write_durably(batch).await.map_err(write_error);
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = self.store.batch();
        // Nine bytes sort after every eight-byte key.
        batch.delete_range(Family::Log, index_key(log_id.index), [0xff; 9]);
        self.store.write_durably(batch).await.map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = self.store.batch();
        batch.put(Family::Meta, LAST_PURGED, encode(&log_id)?);
        batch.delete_range(
            Family::Log,
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.store.write_durably(batch).await.map_err(write_error)
    }
}
