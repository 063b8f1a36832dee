//! The Raft log, in the node's RocksDB (column family `raft_log`, keyed by
//! index as 8 big-endian bytes so keys sort in log order), with the vote,
//! the committed index and the last purged entry in `raft_meta`.
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
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::config::Durability;
use crate::storage::{RAFT_LOG_CF, RAFT_META_CF, Storage};

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

/// Reads a value of `raft_meta`.
pub(super) fn read_meta<T: DeserializeOwned>(
    storage: &Storage,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let cf = storage.column_family(RAFT_META_CF).map_err(read_error)?;
    match storage.db().get_cf(cf, key).map_err(read_error)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Writes `batch`, fsynced when the node's durability asks for it (off the
/// async workers then: an fsync takes milliseconds).
pub(super) async fn write(storage: &Storage, batch: WriteBatch) -> Result<(), StorageError> {
    let options = storage.write_options();
    if storage.durability() == Durability::Fsync {
        let db = storage.db().clone();
        tokio::task::spawn_blocking(move || db.write_opt(batch, &options))
            .await
            .map_err(write_error)?
            .map_err(write_error)
    } else {
        storage.db().write_opt(batch, &options).map_err(write_error)
    }
}

#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
}

impl LogStore {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    async fn put_meta(&self, key: &[u8], value: &impl Serialize) -> Result<(), StorageError> {
        let cf = self
            .storage
            .column_family(RAFT_META_CF)
            .map_err(write_error)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, encode(value)?);
        write(&self.storage, batch).await
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let cf = self
            .storage
            .column_family(RAFT_LOG_CF)
            .map_err(read_error)?;
        match self.storage.db().iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(read_error)?;
                Ok(Some(decode(&value)?))
            }
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
        let cf = self
            .storage
            .column_family(RAFT_LOG_CF)
            .map_err(read_error)?;
        let key = index_key(start);
        let iterator = self
            .storage
            .db()
            .iterator_cf(cf, IteratorMode::From(&key, Direction::Forward));
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
        let last_purged: Option<LogId> = read_meta(&self.storage, LAST_PURGED)?;
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
        read_meta(&self.storage, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(read_meta::<Option<LogId>>(&self.storage, COMMITTED)?.flatten())
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
        let cf = self
            .storage
            .column_family(RAFT_LOG_CF)
            .map_err(write_error)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode(&entry)?);
        }
        let result = write(&self.storage, batch).await;
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self
            .storage
            .column_family(RAFT_LOG_CF)
            .map_err(write_error)?;
        let mut batch = WriteBatch::default();
        // Nine bytes sort after every eight-byte key.
        batch.delete_range_cf(cf, &index_key(log_id.index)[..], &[0xff; 9][..]);
        write(&self.storage, batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let log = self
            .storage
            .column_family(RAFT_LOG_CF)
            .map_err(write_error)?;
        let meta = self
            .storage
            .column_family(RAFT_META_CF)
            .map_err(write_error)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, LAST_PURGED, encode(&log_id)?);
        batch.delete_range_cf(log, index_key(0), index_key(log_id.index.saturating_add(1)));
        write(&self.storage, batch).await
    }
}
