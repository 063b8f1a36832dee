//! The one interface the cluster has to storage.
//!
//! - [`Replicator`]: where a guest's writes go once the node is in a
//!   cluster (the cluster implements it);
//! - [`ClusterStore`]: what the cluster may do with the database: read and
//!   write its own two column families ([`Family::Log`], [`Family::Meta`])
//!   and the data ([`Family::Data`]) in atomic batches, read them under one
//!   consistent view (snapshots), and say whether local writes are allowed
//!   ([`LocalWrites`]).
//!
//! Storage knows the families by role, not by content: what a log entry,
//! a vote or a membership is stays the cluster's business.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};

use super::namespace::{Operation, StorageError};
use super::{DATA_CF, LOG_CF, META_CF, Storage};
use crate::process::Fence;

/// Where writes go once the node is part of a cluster.
pub trait Replicator: Send + Sync {
    /// Makes `operations` (keys already prefixed) durable on a majority of
    /// the cluster and applied on this node; `fence` says which process's
    /// registration the write comes from, if any.
    fn write(
        self: Arc<Self>,
        operations: Vec<Operation>,
        fence: Option<Fence>,
    ) -> BoxFuture<'static, Result<(), StorageError>>;
}

/// A column family, by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// What guests wrote (every component's namespace).
    Data,
    /// The cluster's log.
    Log,
    /// The cluster's metadata.
    Meta,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Data => DATA_CF,
            Family::Log => LOG_CF,
            Family::Meta => META_CF,
        }
    }
}

/// What a local (unreplicated) write must do first: the cluster decides,
/// the storage enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalWrites {
    /// Written as they come.
    Open,
    /// The first one also deletes this key of [`Family::Meta`] (a mark
    /// that the data is unchanged since it was a cluster's copy); then
    /// open.
    ClearMarkFirst(Vec<u8>),
    /// Refused, with the reason (the node is joining a cluster whose data
    /// will replace its own, or runs outside its cluster).
    Refused(String),
}

/// A key and a value as RocksDB hands them out.
pub type RawPair = (Box<[u8]>, Box<[u8]>);

/// What the cluster may do with this node's storage.
#[derive(Clone)]
pub struct ClusterStore {
    storage: Storage,
}

impl ClusterStore {
    pub(super) fn new(storage: Storage) -> Self {
        Self { storage }
    }

    fn family(&self, family: Family) -> Result<&ColumnFamily, StorageError> {
        self.storage.column_family(family.name())
    }

    /// From now on, every write of a guest goes through `replicator`. Set
    /// once.
    pub fn replicate_through(&self, replicator: Arc<dyn Replicator>) {
        let _ = self.storage.replicator.set(replicator);
    }

    /// From now on, local writes follow `policy`.
    pub fn set_local_writes(&self, policy: LocalWrites) {
        self.storage.set_local_writes(policy);
    }

    /// Whether any guest data is stored.
    pub fn has_data(&self) -> bool {
        self.storage.has_data()
    }

    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.storage.db.get_cf(self.family(family)?, key)?)
    }

    /// The pairs of `family` from `from` on, in key order.
    pub fn scan_from<'a>(
        &'a self,
        family: Family,
        from: &[u8],
    ) -> Result<impl Iterator<Item = Result<RawPair, StorageError>> + 'a, StorageError> {
        let iterator = self.storage.db.iterator_cf(
            self.family(family)?,
            IteratorMode::From(from, Direction::Forward),
        );
        Ok(iterator.map(|item| item.map_err(StorageError::from)))
    }

    /// The last pair of `family` in key order.
    pub fn last(&self, family: Family) -> Result<Option<RawPair>, StorageError> {
        let mut iterator = self
            .storage
            .db
            .iterator_cf(self.family(family)?, IteratorMode::End);
        iterator.next().transpose().map_err(StorageError::from)
    }

    /// An empty batch, to fill and write at once.
    pub fn batch(&self) -> StoreBatch {
        StoreBatch {
            store: self.clone(),
            batch: WriteBatch::default(),
            missing: None,
        }
    }

    /// Writes `batch` with the node's durability (`--fsync`), off the async
    /// workers when it fsyncs.
    pub async fn write_durably(&self, batch: StoreBatch) -> Result<(), StorageError> {
        let batch = batch.into_inner()?;
        self.storage.write_durably(batch).await
    }

    /// Writes `batch` and syncs the write-ahead log: for the few writes a
    /// node must find again after any crash (who it is in a cluster).
    pub fn write_synced(&self, batch: StoreBatch) -> Result<(), StorageError> {
        self.write(batch)?;
        self.sync_wal()
    }

    /// Writes `batch` into the write-ahead log, without waiting for a sync.
    pub fn write(&self, batch: StoreBatch) -> Result<(), StorageError> {
        self.storage.write_now(batch.into_inner()?)
    }

    pub fn sync_wal(&self) -> Result<(), StorageError> {
        self.storage
            .db
            .flush_wal(true)
            .map_err(|error| self.storage.health.write_failed(error))
    }

    /// A consistent view of the database as it is now: what is written
    /// after does not show in it.
    pub fn read_view(&self) -> ReadView<'_> {
        ReadView {
            store: self,
            view: self.storage.db.snapshot(),
        }
    }
}

/// Changes to apply at once, in any family.
pub struct StoreBatch {
    store: ClusterStore,
    batch: WriteBatch,
    /// A family that could not be found: the batch fails when written.
    missing: Option<StorageError>,
}

impl StoreBatch {
    fn with_family(&mut self, family: Family, change: impl FnOnce(&mut WriteBatch, &ColumnFamily)) {
        match self.store.family(family) {
            Ok(handle) => change(&mut self.batch, handle),
            Err(error) => self.missing = Some(error),
        }
    }

    pub fn put(&mut self, family: Family, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.with_family(family, |batch, cf| batch.put_cf(cf, key, value));
    }

    pub fn delete(&mut self, family: Family, key: impl AsRef<[u8]>) {
        self.with_family(family, |batch, cf| batch.delete_cf(cf, key));
    }

    /// Deletes the keys from `from` (included) to `to` (excluded).
    pub fn delete_range(&mut self, family: Family, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) {
        self.with_family(family, |batch, cf| {
            batch.delete_range_cf(cf, from.as_ref(), to.as_ref())
        });
    }

    /// Bytes the batch holds so far.
    pub fn size(&self) -> usize {
        self.batch.size_in_bytes()
    }

    fn into_inner(self) -> Result<WriteBatch, StorageError> {
        match self.missing {
            Some(error) => Err(error),
            None => Ok(self.batch),
        }
    }
}

/// A consistent read of the database (a RocksDB snapshot).
pub struct ReadView<'a> {
    store: &'a ClusterStore,
    view: rocksdb::Snapshot<'a>,
}

impl ReadView<'_> {
    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.view.get_cf(self.store.family(family)?, key)?)
    }

    /// Every pair of `family`, in key order.
    pub fn scan(
        &self,
        family: Family,
    ) -> Result<impl Iterator<Item = Result<RawPair, StorageError>> + '_, StorageError> {
        let iterator = self
            .view
            .iterator_cf(self.store.family(family)?, IteratorMode::Start);
        Ok(iterator.map(|item| item.map_err(StorageError::from)))
    }
}
