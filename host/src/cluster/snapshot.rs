//! Snapshots of the state machine: a file holding everything a node needs
//! to stand where the log stood at one index, so the log before it can be
//! purged and a node that joins late or fell far behind catches up without
//! replaying history.
//!
//! The file is a header (the Raft snapshot metadata and the cluster state)
//! followed by every key and value of the data column family, written from
//! one RocksDB snapshot: the applied index, membership and cluster state are
//! read under that same snapshot, and since applying an entry writes them
//! in the same batch as its data, they always agree with the data.
//!
//! ```text
//! "OTPWSNAP1" | u32 header length | header (postcard)
//! (u32 key length | key | u32 value length | value)* | u32::MAX
//! ```
//!
//! Installing one replaces the whole data column family. It is marked in
//! the cluster's metadata first and the file kept until the end, so a node that dies
//! in the middle installs it again when it starts.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode, read_error, write_error};
use super::types::{ClusterState, LogId, SnapshotMeta, StorageError, StoredMembership};
use crate::storage::{ClusterStore, Family};

const MAGIC: &[u8] = b"OTPWSNAP1";
const END: u32 = u32::MAX;
/// Largest key and value a snapshot may hold (the storage limits, with
/// room for the namespace prefix).
const MAX_KEY: usize = 64 * 1024;
const MAX_VALUE: usize = 64 * 1024 * 1024;
/// Bytes of pairs written per batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Keys of the state machine's own metadata in `raft_meta`.
pub(super) const APPLIED: &[u8] = b"sm_applied";
pub(super) const MEMBERSHIP: &[u8] = b"sm_membership";
pub(super) const CLUSTER: &[u8] = b"sm_cluster";
/// Present while a snapshot is being installed.
pub(super) const INSTALLING: &[u8] = b"sm_installing";

/// The file names in the snapshot directory.
pub(super) const CURRENT: &str = "current.snapshot";
pub(super) const INSTALLING_FILE: &str = "installing.snapshot";

/// What a snapshot file starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Header {
    pub meta: SnapshotMeta,
    pub cluster: ClusterState,
}

/// Writes a snapshot of `store`'s state machine to `dir/current.snapshot`
/// and returns its header. Blocking: run it off the async workers.
pub(super) fn build(
    store: &ClusterStore,
    dir: &Path,
    snapshot_id: String,
) -> Result<Header, StorageError> {
    let view = store.read_view();
    let read = |key: &[u8]| -> Result<Option<Vec<u8>>, StorageError> {
        view.get(Family::Meta, key).map_err(read_error)
    };
    let last_log_id: Option<LogId> = match read(APPLIED)? {
        Some(bytes) => decode(&bytes)?,
        None => None,
    };
    let last_membership: StoredMembership = match read(MEMBERSHIP)? {
        Some(bytes) => decode(&bytes)?,
        None => StoredMembership::default(),
    };
    let cluster: ClusterState = match read(CLUSTER)? {
        Some(bytes) => decode(&bytes)?,
        None => ClusterState::default(),
    };
    let header = Header {
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        },
        cluster,
    };
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let building = dir.join(format!("building-{}.snapshot", std::process::id()));
    let mut out = BufWriter::new(File::create(&building).map_err(write_error)?);
    out.write_all(MAGIC).map_err(write_error)?;
    write_block(&mut out, &encode(&header)?)?;
    for item in view.scan(Family::Data).map_err(read_error)? {
        let (key, value) = item.map_err(read_error)?;
        write_block(&mut out, &key)?;
        write_block(&mut out, &value)?;
    }
    out.write_all(&END.to_be_bytes()).map_err(write_error)?;
    let file = out.into_inner().map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&building, dir.join(CURRENT)).map_err(write_error)?;
    Ok(header)
}

fn write_block(out: &mut impl Write, bytes: &[u8]) -> Result<(), StorageError> {
    out.write_all(&(bytes.len() as u32).to_be_bytes())
        .map_err(write_error)?;
    out.write_all(bytes).map_err(write_error)
}

/// A length-prefixed block of at most `limit` bytes; `None` at the end mark.
fn read_block(input: &mut impl Read, limit: usize) -> Result<Option<Vec<u8>>, StorageError> {
    let mut length = [0u8; 4];
    input.read_exact(&mut length).map_err(read_error)?;
    let length = u32::from_be_bytes(length);
    if length == END {
        return Ok(None);
    }
    let length = length as usize;
    if length > limit {
        return Err(read_error(format!(
            "snapshot block of {length} bytes, over the limit of {limit}"
        )));
    }
    let mut block = vec![0u8; length];
    input.read_exact(&mut block).map_err(read_error)?;
    Ok(Some(block))
}

/// The header of the snapshot file at `path`.
pub(super) fn read_header(path: &Path) -> Result<Header, StorageError> {
    let mut input = BufReader::new(File::open(path).map_err(read_error)?);
    read_header_from(&mut input)
}

fn read_header_from(input: &mut impl Read) -> Result<Header, StorageError> {
    let mut magic = [0u8; MAGIC.len()];
    input.read_exact(&mut magic).map_err(read_error)?;
    if magic != MAGIC {
        return Err(read_error("not a snapshot file"));
    }
    let header =
        read_block(input, MAX_VALUE)?.ok_or_else(|| read_error("snapshot without a header"))?;
    decode(&header)
}

/// Replaces the state machine of `store` with the snapshot at
/// `dir/installing.snapshot` (already in place, and marked in the cluster's
/// metadata), then makes it the current snapshot. Blocking.
pub(super) fn install(store: &ClusterStore, dir: &Path) -> Result<Header, StorageError> {
    let path = dir.join(INSTALLING_FILE);
    let mut input = BufReader::new(File::open(&path).map_err(read_error)?);
    let header = read_header_from(&mut input)?;
    // Data keys start with a component name, all of whose bytes are ASCII.
    let mut batch = store.batch();
    batch.delete_range(Family::Data, [], [0xff]);
    while let Some(key) = read_block(&mut input, MAX_KEY)? {
        let value = read_block(&mut input, MAX_VALUE)?
            .ok_or_else(|| read_error("snapshot ends after a key"))?;
        batch.put(Family::Data, key, value);
        if batch.size() >= INSTALL_BATCH_BYTES {
            store
                .write(std::mem::replace(&mut batch, store.batch()))
                .map_err(write_error)?;
        }
    }
    batch.put(Family::Meta, APPLIED, encode(&header.meta.last_log_id)?);
    batch.put(
        Family::Meta,
        MEMBERSHIP,
        encode(&header.meta.last_membership)?,
    );
    batch.put(Family::Meta, CLUSTER, encode(&header.cluster)?);
    batch.delete(Family::Meta, INSTALLING);
    store.write_synced(batch).map_err(write_error)?;
    std::fs::rename(&path, dir.join(CURRENT)).map_err(write_error)?;
    Ok(header)
}

/// Where a node keeps its snapshots.
pub(super) fn directory(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}
