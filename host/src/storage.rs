//! Storage: one RocksDB database per node, split into a namespace per
//! component.
//!
//! Every key a guest writes is stored as `component name, 0x00, guest key`.
//! Component names never hold a zero byte (see `component::validate_name`), so
//! no guest key can reach into another component's range: a guest has no way
//! to name a key outside its own prefix. Replication to other nodes (a later
//! issue) hooks in here, below the namespaces, where writes are already bytes.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::config::Durability;

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
}

impl From<rocksdb::Error> for StorageError {
    fn from(error: rocksdb::Error) -> Self {
        StorageError::Io(error.into_string())
    }
}

/// A key and its value, as a scan returns them.
pub type Pair = (Vec<u8>, Vec<u8>);

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum Operation {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The node's database.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
    durability: Durability,
}

impl Storage {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create storage directory {}", dir.display()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_keep_log_file_num(5);
        let db = DB::open(&options, dir).map_err(|e| {
            let message = e.into_string();
            if message.contains("lock") {
                anyhow::anyhow!(
                    "storage in {} is in use by another running node ({message})",
                    dir.display()
                )
            } else {
                anyhow::anyhow!("cannot open storage in {}: {message}", dir.display())
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            durability,
        })
    }

    /// The part of the database that belongs to `component`.
    pub fn namespace(&self, component: &str) -> Namespace {
        let mut prefix = component.as_bytes().to_vec();
        prefix.push(0);
        Namespace {
            storage: self.clone(),
            prefix,
        }
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

    fn write_options(&self) -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(self.durability == Durability::Fsync);
        options
    }

    /// Applies a batch. An fsynced write can take milliseconds, so it runs on
    /// the blocking pool rather than on a runtime worker.
    async fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
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
        let mut batch = WriteBatch::default();
        let mut bytes = 0usize;
        for operation in &operations {
            match operation {
                Operation::Put(key, value) => {
                    bytes = bytes.saturating_add(key.len() + value.len());
                    if bytes > MAX_VALUE_BYTES {
                        return Err(StorageError::TooLarge);
                    }
                    batch.put(self.full_key(key)?, value);
                }
                Operation::Delete(key) => batch.delete(self.full_key(key)?),
            }
        }
        self.storage.write(batch).await
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
