//! Storage: one RocksDB database per node, split into a namespace per
//! component.
//!
//! - `namespace`: a component's keys ([`Namespace`]), the limits on them,
//!   and how a guest's write reaches the database or the cluster;
//! - `cluster_store`: the one interface the cluster has to storage
//!   ([`ClusterStore`] and the [`Replicator`] seam): its own column
//!   families, applying replicated writes, snapshots, and whether local
//!   writes are allowed;
//! - `spill`: hibernated processes' states past their memory budget
//!   ([`crate::process::StateSpill`]), in a local column family;
//! - `health`: whether the database still takes writes, after an I/O
//!   error it cannot retry;
//! - `disk`: the floor of free space under which guests' writes are
//!   refused, short of a full disk.
//!
//! It may use `crate::config` and `crate::process`'s ids (a write carries
//! the [`Fence`](crate::process::Fence) of the process making it); it knows
//! nothing of Raft, placement or links: what the cluster keeps in its
//! column families is the cluster's business.

mod cluster_store;
mod disk;
mod health;
mod namespace;
mod spill;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rocksdb::{ColumnFamily, DB, IteratorMode, Options, WriteBatch, WriteOptions};

pub use cluster_store::{ClusterStore, Family, LocalWrites, ReadView, Replicator, StoreBatch};
pub use namespace::{
    MAX_KEY_BYTES, MAX_SCAN_BYTES, MAX_SCAN_PAIRS, MAX_VALUE_BYTES, Namespace, Operation, Pair,
    StorageError,
};
pub use spill::HibernatedSpill;

use crate::config::Durability;

/// The column family of the data guests write. The same whether the node
/// is clustered or not, so a lone node's data becomes a cluster's without
/// a migration.
const DATA_CF: &str = "default";
/// The cluster's column families ([`Family::Log`], [`Family::Meta`]). The
/// names are on disk, so they keep the names they were created with.
const LOG_CF: &str = "raft_log";
const META_CF: &str = "raft_meta";
/// Hibernated processes' states past their memory budget: local, never
/// replicated, written without the WAL, cleared at every start.
const HIBERNATED_CF: &str = "hibernated";

/// The node's database.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
    durability: Durability,
    /// Set once, when the node joins or founds a cluster.
    replicator: Arc<OnceLock<Arc<dyn Replicator>>>,
    /// What a local (unreplicated) write must do first, as the cluster
    /// said (open, clear a mark, or refuse).
    local_writes: Arc<ArcSwap<LocalWrites>>,
    health: Arc<health::Health>,
    disk: Arc<disk::DiskRoom>,
}

impl Storage {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create storage directory {}", dir.display()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(5);
        // Its table cache within the node's file budget, so that reading
        // never takes the descriptors a flush or a new log needs.
        let budget = crate::budget::FileBudget::of_this_process();
        options.set_max_open_files(i32::try_from(budget.storage_files).unwrap_or(i32::MAX));
        let families = [DATA_CF, LOG_CF, META_CF, HIBERNATED_CF];
        let db = DB::open_cf(&options, dir, families).map_err(|e| {
            let message = e.into_string();
            if message.contains("lock") {
                anyhow::anyhow!(
                    "storage in {} is in use by another running node: stop that node, or talk \
                     to it (rpc, remote) ({message})",
                    dir.display()
                )
            } else {
                anyhow::anyhow!("cannot open storage in {}: {message}", dir.display())
            }
        })?;
        let storage = Self {
            db: Arc::new(db),
            disk: Arc::new(disk::DiskRoom::new(Arc::from(dir))),
            durability,
            replicator: Arc::default(),
            local_writes: Arc::new(ArcSwap::from_pointee(LocalWrites::Open)),
            health: Arc::default(),
        };
        storage
            .hibernated_spill()
            .clear()
            .context("cannot clear the hibernated states of the last run")?;
        Ok(storage)
    }

    /// The part of the database that belongs to `component`.
    pub fn namespace(&self, component: &str) -> Namespace {
        Namespace::new(self.clone(), component)
    }

    /// Where hibernated processes' states past their budget go.
    pub fn hibernated_spill(&self) -> HibernatedSpill {
        HibernatedSpill::new(self.clone())
    }

    /// What the cluster may do with this storage.
    pub fn cluster_store(&self) -> ClusterStore {
        ClusterStore::new(self.clone())
    }

    /// Whether any guest data is stored.
    pub fn has_data(&self) -> bool {
        self.db.iterator(IteratorMode::Start).next().is_some()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Why the database takes no more writes, once it has failed one.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Whether the cause of a failure looks gone, so that reopening the
    /// database would work ([`disk::DiskRoom::can_reopen`]).
    pub fn can_reopen(&self) -> Result<(), String> {
        self.disk.can_reopen()
    }

    /// Its metrics: whether it has failed, and its failed writes.
    pub fn series(&self) -> Vec<crate::metrics::Series> {
        let mut series = self.health.series();
        series.extend(self.disk.series());
        series
    }

    /// From now on, local writes follow `policy` (the cluster decides:
    /// while the node joins a cluster, or runs outside its own, they are
    /// refused).
    pub fn set_local_writes(&self, policy: LocalWrites) {
        self.local_writes.store(Arc::new(policy));
    }

    /// Makes everything written so far durable and writes the memtables out,
    /// so the next start has no log to replay. Called on graceful shutdown.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.db
            .flush_wal(true)
            .context("cannot sync the write-ahead log")?;
        self.db.flush().context("cannot flush memtables")?;
        Ok(())
    }

    /// A column family opened with the database (see [`Storage::open`]).
    fn column_family(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Io(format!("column family `{name}` is missing")))
    }

    fn write_options(&self) -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(self.durability == Durability::Fsync);
        options
    }

    /// Writes `batch` with the node's durability. An fsynced write can take
    /// milliseconds, so it runs on the blocking pool rather than on a
    /// runtime worker.
    async fn write_durably(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.health.check_writable()?;
        let options = self.write_options();
        let written = if self.durability == Durability::Fsync {
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.write_opt(batch, &options))
                .await
                .map_err(|e| StorageError::Io(format!("write task failed: {e}")))?
        } else {
            self.db.write_opt(batch, &options)
        };
        written.map_err(|error| self.health.write_failed(error))
    }

    /// Writes `batch` at once, without a sync; a failure fails the database.
    fn write_now(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.health.check_writable()?;
        self.db
            .write(batch)
            .map_err(|error| self.health.write_failed(error))
    }

    /// Applies a batch of a lone node, as the local-write policy allows.
    async fn write_local(&self, mut batch: WriteBatch) -> Result<(), StorageError> {
        let policy = self.local_writes.load();
        match &**policy {
            LocalWrites::Open => {}
            LocalWrites::Refused(reason) => return Err(StorageError::Unavailable(reason.clone())),
            LocalWrites::ClearMarkFirst(key) => {
                batch.delete_cf(self.column_family(META_CF)?, key);
                self.local_writes.store(Arc::new(LocalWrites::Open));
            }
        }
        drop(policy);
        self.write_durably(batch).await
    }
}

#[cfg(test)]
mod tests;
