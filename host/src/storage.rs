//! Storage: one RocksDB database per node, split into a namespace per
//! component.
//!
//! Every key a guest writes is stored as `component name, 0x00, guest key`.
//! Component names never hold a zero byte (see `component::validate_name`), so
//! no guest key can reach into another component's range: a guest has no way
//! to name a key outside its own prefix.
//!
//! On a node that is part of a cluster, writes are replicated: a namespace
//! hands its batch (keys already prefixed) to the [`Replicator`] the cluster
//! installed, which returns once a majority has it and this node has applied
//! it. Reads stay local. The database has four column families: the data
//! (`default`, the same layout whether the node is clustered or not, so a
//! lone node's data becomes a cluster's without a migration), the Raft log
//! and metadata (`raft_log`, `raft_meta`), which only `crate::cluster`
//! reads and writes, and the states of hibernated processes past their
//! memory budget (`hibernated`, local to the node's run).

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::config::Durability;
use crate::registry::Fence;

/// The column family of the data guests write.
pub const DATA_CF: &str = "default";
/// The Raft log of a clustered node: index (8 bytes, big-endian) to entry.
pub const RAFT_LOG_CF: &str = "raft_log";
/// A clustered node's Raft metadata (vote, applied index, membership,
/// placement, its node id).
pub const RAFT_META_CF: &str = "raft_meta";
/// The column family of hibernated processes' states past the memory budget
/// (`crate::hibernation::SleepingStates`): local, never replicated, written
/// without the WAL, and cleared at every start (a hibernated process does
/// not outlive its node's run; after a restart it starts from storage).
pub const HIBERNATED_CF: &str = "hibernated";
/// In `raft_meta` of a node that left a cluster: which one. Removed by the
/// first write it makes on its own, since its data is then no longer a copy
/// of that cluster's.
pub const LEFT_CLUSTER: &[u8] = b"left_cluster";

/// What the local write path must do besides writing (see
/// [`Storage::local_mode`]).
const LOCAL_PLAIN: u8 = 0;
const LOCAL_CLEARS_LEFT_MARK: u8 = 1;
const LOCAL_PAUSED: u8 = 2;
const LOCAL_OUTSIDE_CLUSTER: u8 = 3;

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

/// The node's database.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
    durability: Durability,
    /// Set once, when the node joins or founds a cluster.
    replicator: Arc<OnceLock<Arc<dyn Replicator>>>,
    /// What a local (unreplicated) write must do first: nothing, remove the
    /// left-cluster mark, or fail because the node is joining a cluster
    /// (whose snapshot will replace the data).
    local_mode: Arc<AtomicU8>,
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
        let families = [DATA_CF, RAFT_LOG_CF, RAFT_META_CF, HIBERNATED_CF];
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
            durability,
            replicator: Arc::default(),
            local_mode: Arc::default(),
        };
        storage.reload_left_cluster_marker();
        storage
            .clear_hibernated()
            .context("cannot clear the hibernated states of the last run")?;
        Ok(storage)
    }

    fn clear_hibernated(&self) -> Result<(), StorageError> {
        let cf = self.column_family(HIBERNATED_CF)?;
        self.db
            .delete_range_cf(cf, [0u8; 8], [0xffu8; 8])
            .map_err(StorageError::from)
    }

    /// Keeps the handed-over state of hibernated process `pid`.
    pub fn keep_hibernated(&self, pid: u64, state: &[u8]) -> Result<(), StorageError> {
        let cf = self.column_family(HIBERNATED_CF)?;
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .put_cf_opt(cf, pid.to_be_bytes(), state, &options)
            .map_err(StorageError::from)
    }

    /// Takes back (reads and forgets) the state of hibernated process `pid`.
    pub fn take_hibernated(&self, pid: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let state = self
            .db
            .get_cf(self.column_family(HIBERNATED_CF)?, pid.to_be_bytes())?;
        self.forget_hibernated(pid)?;
        Ok(state)
    }

    /// Forgets the state of hibernated process `pid` (it ended).
    pub fn forget_hibernated(&self, pid: u64) -> Result<(), StorageError> {
        let cf = self.column_family(HIBERNATED_CF)?;
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .delete_cf_opt(cf, pid.to_be_bytes(), &options)
            .map_err(StorageError::from)
    }

    /// The id of the cluster this node left, if its data is still that
    /// cluster's copy.
    pub fn left_cluster_marker(&self) -> Option<Vec<u8>> {
        let meta = self.db.cf_handle(RAFT_META_CF)?;
        self.db.get_cf(meta, LEFT_CLUSTER).ok().flatten()
    }

    /// Reads the left-cluster mark again (after the cluster changed it).
    pub fn reload_left_cluster_marker(&self) {
        let mode = if self.left_cluster_marker().is_some() {
            LOCAL_CLEARS_LEFT_MARK
        } else {
            LOCAL_PLAIN
        };
        self.local_mode.store(mode, Ordering::Release);
    }

    /// While `paused`, local writes fail: the node is joining a cluster,
    /// whose data is about to replace its own.
    pub fn pause_local_writes(&self, paused: bool) {
        if paused {
            self.local_mode.store(LOCAL_PAUSED, Ordering::Release);
        } else {
            self.reload_left_cluster_marker();
        }
    }

    /// From now on, local writes fail: the data belongs to a cluster, and
    /// this node runs outside it (`eval`), where a write would make its
    /// copy differ from the others'.
    pub fn refuse_writes_outside_cluster(&self) {
        self.local_mode
            .store(LOCAL_OUTSIDE_CLUSTER, Ordering::Release);
    }

    /// The part of the database that belongs to `component`.
    pub fn namespace(&self, component: &str) -> Namespace {
        let mut prefix = component.as_bytes().to_vec();
        prefix.push(0);
        Namespace {
            storage: self.clone(),
            prefix,
            fence: None,
        }
    }

    /// From now on, every write goes through `replicator`. Set once.
    pub fn replicate_through(&self, replicator: Arc<dyn Replicator>) {
        let _ = self.replicator.set(replicator);
    }

    /// Whether any guest data is stored.
    pub fn has_data(&self) -> bool {
        self.db.iterator(IteratorMode::Start).next().is_some()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The database, for the cluster's log and state machine.
    pub(crate) fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// A column family opened with the database (see [`Storage::open`]).
    pub(crate) fn column_family(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Io(format!("column family `{name}` is missing")))
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

    pub(crate) fn write_options(&self) -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(self.durability == Durability::Fsync);
        options
    }

    /// Applies a batch of a lone node. An fsynced write can take
    /// milliseconds, so it runs on the blocking pool rather than on a
    /// runtime worker.
    async fn write(&self, mut batch: WriteBatch) -> Result<(), StorageError> {
        match self.local_mode.load(Ordering::Acquire) {
            LOCAL_PLAIN => {}
            LOCAL_PAUSED => {
                return Err(StorageError::Unavailable(
                    "this node is joining a cluster; writes resume once it has".into(),
                ));
            }
            LOCAL_OUTSIDE_CLUSTER => {
                return Err(StorageError::Unavailable(
                    "this data belongs to a cluster and eval runs outside it: it reads, it \
                     does not write (use rpc on the running node)"
                        .into(),
                ));
            }
            _ => {
                if let Some(meta) = self.db.cf_handle(RAFT_META_CF) {
                    batch.delete_cf(meta, LEFT_CLUSTER);
                }
                self.local_mode.store(LOCAL_PLAIN, Ordering::Release);
            }
        }
        let options = self.write_options();
        if self.durability == Durability::Fsync {
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.write_opt(batch, &options))
                .await
                .map_err(|e| StorageError::Io(format!("write task failed: {e}")))??;
        } else {
            self.db.write_opt(batch, &options)?;
        }
        Ok(())
    }
}

/// A component's own keys.
#[derive(Clone)]
pub struct Namespace {
    storage: Storage,
    prefix: Vec<u8>,
    /// The registration of the process writing through this namespace (in a
    /// cluster): its writes count only while it holds its name.
    fence: Option<Fence>,
}

impl Namespace {
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
        self.storage.write(batch).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path(), Durability::Wal).expect("open");
        (dir, storage)
    }

    #[tokio::test]
    async fn components_never_see_each_others_keys() {
        let (_dir, storage) = open();
        let todo = storage.namespace("todo");
        let other = storage.namespace("todox");
        todo.put(b"secret", b"1").await.expect("put");
        assert_eq!(other.get(b"secret"), Ok(None));
        assert!(other.scan_prefix(b"", None, 100).expect("scan").is_empty());
        // A key that starts with a zero byte still lands in the caller's range.
        other.put(b"\0secret", b"2").await.expect("put");
        assert_eq!(todo.get(b"secret"), Ok(Some(b"1".to_vec())));
        assert_eq!(todo.scan_prefix(b"", None, 100).expect("scan").len(), 1);
    }

    #[tokio::test]
    async fn scans_page_through_a_prefix_in_key_order() {
        let (_dir, storage) = open();
        let ns = storage.namespace("c");
        for i in 0..10u8 {
            ns.put(&[b'a', i], &[i]).await.expect("put");
        }
        ns.put(b"b", b"outside").await.expect("put");
        let first = ns.scan_prefix(b"a", None, 4).expect("scan");
        assert_eq!(first.len(), 4);
        let last_key = first.last().map(|(k, _)| k.clone()).expect("a key");
        let rest = ns.scan_prefix(b"a", Some(&last_key), 100).expect("scan");
        assert_eq!(rest.len(), 6);
        assert_eq!(rest[0].0, vec![b'a', 4]);
    }

    #[tokio::test]
    async fn a_scan_stops_gathering_past_its_byte_limit() {
        let (_dir, storage) = open();
        let ns = storage.namespace("c");
        let value = vec![1u8; MAX_SCAN_BYTES / 4];
        for i in 0..10u8 {
            ns.put(&[i], &value).await.expect("put");
        }
        let first = ns.scan_prefix(b"", None, 1000).expect("scan");
        assert_eq!(first.len(), 4, "stops once past the limit, not at 10");
        let last_key = first.last().map(|(k, _)| k.clone()).expect("a key");
        let rest = ns.scan_prefix(b"", Some(&last_key), 1000).expect("scan");
        assert_eq!(rest.len(), 4);
        // The largest value a one-byte key allows.
        let huge = vec![2u8; MAX_VALUE_BYTES - 1];
        ns.put(b"\xff", &huge).await.expect("put");
        let last = ns.scan_prefix(b"\xff", None, 1000).expect("scan");
        assert_eq!(
            last.len(),
            1,
            "a value as large as the limit still comes back"
        );
    }

    #[tokio::test]
    async fn batches_are_all_or_nothing_and_bounded() {
        let (_dir, storage) = open();
        let ns = storage.namespace("c");
        let bad = vec![
            Operation::Put(b"k1".to_vec(), b"v".to_vec()),
            Operation::Put(Vec::new(), b"v".to_vec()),
        ];
        assert_eq!(ns.batch(bad).await, Err(StorageError::InvalidKey));
        assert_eq!(ns.get(b"k1"), Ok(None));
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert_eq!(ns.put(b"k", &big).await, Err(StorageError::TooLarge));
        ns.batch(vec![
            Operation::Put(b"k1".to_vec(), b"v1".to_vec()),
            Operation::Delete(b"k2".to_vec()),
        ])
        .await
        .expect("batch");
        assert_eq!(ns.get(b"k1"), Ok(Some(b"v1".to_vec())));
    }
}
